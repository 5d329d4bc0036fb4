"""Simulated clients: HTTP/1.1 with keep-alive, or HTTP/2 (client_h2.py), over memory
streams to a listener (or TCP, in the agreement test), sending a scripted request mix open
loop (a rate) or closed loop (a concurrency), each request under the client's own
deadline.

They parse and write with the gateway's own sans-IO client codecs (llhttp, h2), as the
simulated hosts do with its server codecs.
"""

import math
import random
from collections.abc import Awaitable, Callable

import attrs
import trio

from gateway.errors import GatewayError
from gateway.io.byte_stream import ByteStream
from gateway.io.trio_util import PEER_GONE, receive_or_eof
from gateway.protocol.codec_h1_client import ClientCodec
from gateway.protocol.events import NEED_DATA, ConnectionEnded, EndStream, ResponseHeaders
from gateway.protocol.headers import HeaderMap, RequestHead
from gateway.testing.client_h2 import H2ClientConnection
from gateway.testing.scenario import ClientScript, RequestSpec, WebSocketSession
from gateway.testing.upstream_host import REQUEST_TAG
from gateway.testing.virtual_clock import sleep, sleep_until

#: Outcomes that are not a status: the client's deadline passed; the connection closed
#: (or broke the protocol) with no response.
TIMEOUT = "timeout"
RESET = "reset"

_MAX_HEADER_BYTES = 65536

#: Opens a connection to the gateway's listener.
Connect = Callable[[], Awaitable[ByteStream]]

#: Virtual time is a sum of float sleeps: ten 100 ms answers end at 0.9999999999999999 s.
#: Nothing is sent within this of a client's end.
_EPSILON = 1e-9


@attrs.frozen
class Outcome:
    """One request, as its client saw it."""

    client: str
    tag: str
    #: Scenario time it was sent at, and how long until its response ended (None: no
    #: response).
    sent_at: float
    latency: float | None
    #: The status ("200"), a gRPC call's grpc-status ("grpc-14"), TIMEOUT or RESET.
    result: str


class ClientConnection:
    """One keep-alive HTTP/1.1 connection of a simulated client."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.codec = ClientCodec(max_header_bytes=_MAX_HEADER_BYTES)
        self.exchanges = 0

    async def exchange(self, spec: RequestSpec, tag: str) -> int | None:
        """Sends the request, reads the whole response; its status, or None if the
        connection ended first."""
        if spec.websocket is not None:
            return await self._websocket(spec, tag, spec.websocket)
        codec = self._next_exchange()
        headers = _headers(spec, tag)
        if spec.body_size:
            headers.set("content-length", str(spec.body_size))
        head = RequestHead(spec.method, spec.path, spec.authority, "http", headers)
        data = codec.send_request_head(head)
        if spec.body_size:
            data += codec.send_data(b"x" * spec.body_size)
        await self.stream.send_all(data + codec.send_end())
        status = None
        while True:
            event = codec.next_event()
            if event is NEED_DATA:
                codec.receive_data(await receive_or_eof(self.stream))
            elif isinstance(event, ResponseHeaders):
                if event.head.status >= 200:
                    status = event.head.status
            elif isinstance(event, EndStream):
                return status
            elif isinstance(event, ConnectionEnded):
                return None

    async def _websocket(
        self, spec: RequestSpec, tag: str, session: WebSocketSession
    ) -> int | None:
        """An upgrade, then `session`'s messages, each echoed back whole: 101 if they all
        came back, None if the tunnel broke first, or the status of a refused upgrade.
        The connection is not reused after."""
        codec = self._next_exchange()
        headers = _headers(spec, tag, _UPGRADE)
        head = RequestHead("GET", spec.path, spec.authority, "http", headers)
        await self.stream.send_all(codec.send_request_head(head) + codec.send_end())
        status = None
        while status is None:
            event = codec.next_event()
            if event is NEED_DATA:
                data = await receive_or_eof(self.stream)
                if not data:
                    return None
                codec.receive_data(data)
            elif isinstance(event, ResponseHeaders) and event.head.status >= 101:
                status = event.head.status
            elif isinstance(event, ConnectionEnded):
                return None
        if status != 101:
            return status
        received = len(codec.take_trailing_data())
        message = b"x" * session.size
        for sent in range(session.messages):
            if sent:
                await sleep(session.interval)
            await self.stream.send_all(message)
            while received < (sent + 1) * session.size:
                data = await receive_or_eof(self.stream)
                if not data:
                    return None
                received += len(data)
        return 101

    def _next_exchange(self) -> ClientCodec:
        if self.exchanges:
            self.codec.start_next_cycle()
        self.exchanges += 1
        return self.codec


#: What a WebSocket client's upgrade request adds (RFC 6455 4.1; any key will do).
_UPGRADE = (
    ("connection", "upgrade"),
    ("upgrade", "websocket"),
    ("sec-websocket-version", "13"),
    ("sec-websocket-key", "c2NlbmFyaW8ta2V5LTAwMQ=="),
)


def _headers(spec: RequestSpec, tag: str, extra: tuple[tuple[str, str], ...] = ()) -> HeaderMap:
    return HeaderMap([("host", spec.authority), (REQUEST_TAG, tag), *extra, *spec.headers.items()])


class SimulatedClient:
    """One `[[clients]]` entry, running from its start for its duration; its outcomes are
    appended to `outcomes`. With several workers (`shard` = (this one, how many)), this
    worker's share: every n-th request of an open loop, every n-th connection of a closed
    loop (as SO_REUSEPORT spreads connections), an HTTP/2 client's one connection on the
    first worker."""

    def __init__(
        self,
        script: ClientScript,
        connect: Connect,
        rng: random.Random,
        start: float,
        end: float,
        outcomes: list[Outcome],
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.script = script
        self._shard = shard
        self._connect = connect
        self._rng = rng
        #: Absolute trio times: the scenario's start, this client's first and last send.
        self._scenario_start = start
        self._from = start + script.start
        duration = script.duration if script.duration is not None else end - self._from
        self._until = min(self._from + duration, end)
        self._outcomes = outcomes
        self._idle: list[ClientConnection] = []
        #: protocol = "http2": the one connection, made when first needed (again if the
        #: gateway closed it), its reader a task in `_readers`.
        self._h2: H2ClientConnection | None = None
        self._h2_lock = trio.Lock()
        self._readers: trio.Nursery | None = None
        self.sent = 0
        self._weights = [spec.weight for spec in script.requests]

    async def run(self) -> None:
        await sleep_until(self._from)
        async with trio.open_nursery() as readers:
            self._readers = readers
            await self._send_all()
            if self._h2 is not None:  # done: its reader ends with it
                self._h2.close()

    async def _send_all(self) -> None:
        index, count = self._shard
        name = self.script.name
        if self.script.protocol == "http2" and index:
            return  # one connection: the first worker's
        async with trio.open_nursery() as nursery:
            if self.script.rate is not None:
                # From the count, not by adding intervals up: a sum drifts by ulps, and a
                # 10 s run at 10 a second would send 101.
                sent = index
                while (at := self._from + sent / self.script.rate) < self._until - _EPSILON:
                    await sleep_until(at)
                    nursery.start_soon(
                        self._one_request, f"{name}/{sent + 1}", name=f"client {name}"
                    )
                    sent += count
            else:
                assert self.script.concurrency is not None
                for _ in range(index, self.script.concurrency, count):
                    nursery.start_soon(self._closed_loop, name=f"client {name}")

    def close_idle(self) -> None:
        """Closes the keep-alive connections it holds, as a client that is done does."""
        for connection in self._idle:
            connection.stream.close_now()
        self._idle.clear()

    async def _exchange_h1(self, spec: RequestSpec, tag: str, deadline: float) -> str | None:
        connection = self._idle.pop() if self._idle else ClientConnection(await self._connect())
        try:
            status = await connection.exchange(spec, tag)
        except (*PEER_GONE, GatewayError):
            status = None
        except trio.Cancelled:
            if trio.current_time() >= deadline:
                connection.stream.close_now()  # a client that gives up closes its connection
            # Else the run ended with the request in flight: its connection stays open, so
            # the report's leftover tasks show what the gateway is still doing with it.
            raise
        if status is not None and connection.codec.reusable:
            self._idle.append(connection)
        else:
            connection.stream.close_now()
        return str(status) if status is not None else None

    async def _exchange_h2(self, spec: RequestSpec, tag: str, deadline: float) -> str | None:
        async with self._h2_lock:
            if self._h2 is None or not self._h2.reusable:
                self._h2 = H2ClientConnection(await self._connect())
                assert self._readers is not None
                self._readers.start_soon(self._h2.run, name=f"client {self.script.name} h2")
            connection = self._h2
        return await connection.exchange(spec, tag, REQUEST_TAG, deadline)

    async def _closed_loop(self) -> None:
        index, count = self._shard
        while trio.current_time() < self._until - _EPSILON:
            # Tags differ across workers: the hosts count each request's attempts by it.
            number = self.sent + 1
            await self._one_request(
                f"{self.script.name}/{number}"
                if count == 1
                else f"{self.script.name}/{index}.{number}"
            )
            await sleep(self.script.think_time)

    async def _one_request(self, tag: str) -> None:
        script = self.script
        spec = (
            script.requests[0]
            if len(script.requests) == 1
            else self._rng.choices(script.requests, self._weights)[0]
        )
        self.sent += 1
        sent_at = trio.current_time()
        deadline = sent_at + script.deadline if script.deadline is not None else math.inf
        outcome: str | None = None
        with trio.move_on_at(deadline) as scope:
            if script.protocol == "http2":
                outcome = await self._exchange_h2(spec, tag, deadline)
            else:
                outcome = await self._exchange_h1(spec, tag, deadline)
        latency = trio.current_time() - sent_at
        if scope.cancelled_caught:
            result, latency_seen = TIMEOUT, None
        elif outcome is None:
            result, latency_seen = RESET, None
        else:
            result, latency_seen = outcome, latency
        self._outcomes.append(
            Outcome(script.name, tag, sent_at - self._scenario_start, latency_seen, result)
        )
