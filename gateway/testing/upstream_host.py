"""A simulated upstream host: a server at a cluster endpoint's address, HTTP/1.1 (with
WebSocket upgrades, echoed) or HTTP/2 (upstream_host_h2.py), doing what its script says
at each moment (answering after a latency, refusing connections, hanging, resetting
mid-body, going down and coming back).

It parses and writes with the gateway's own sans-IO codecs (llhttp, h2), which is what
makes a long scenario affordable; the gateway on the other side does not know it is
talking to itself, and nothing here changes how it behaves.
"""

import random

import attrs
import trio

from gateway.config.model import Address
from gateway.errors import GatewayError
from gateway.http.conn_manager import H2_PREFACE
from gateway.io.byte_stream import ByteStream
from gateway.io.trio_util import PEER_GONE, receive_or_eof
from gateway.protocol.codec_h1_server import ServerCodec
from gateway.protocol.events import NEED_DATA, Data, EndStream, RequestHeaders
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead
from gateway.testing.behaviour import Answer, Behaviour, Phases, draw_latency, draw_status
from gateway.testing.memory_stream import memory_stream_pair
from gateway.testing.upstream_host_h2 import serve_h2
from gateway.testing.virtual_clock import sleep, sleep_until

#: The header the simulated clients tag each request with, so that a host can count the
#: attempts the gateway made for one request (its retries).
REQUEST_TAG = "x-scenario-request"

#: What a "reset" host sends of a body before it cuts the connection, when its script
#: gives the body no size: a reset must land mid-body.
_RESET_BODY_SIZE = 1024

_MAX_HEADER_BYTES = 65536


@attrs.define(eq=False)
class HostRecord:
    """What a host saw and did."""

    #: Connections accepted, and refused (down).
    connections: int = 0
    refused: int = 0
    #: Responses sent whole, by status.
    served: dict[int, int] = attrs.Factory(dict)
    #: Requests whose response was cut (reset), or never came (hang, down).
    cut: int = 0
    #: Requests that reached this host, by the client's tag.
    attempts: dict[str, int] = attrs.Factory(dict)


class SimulatedHost:
    """One scripted host. `connect` is its end of the network: the cluster's connector
    calls it for a new connection; the host serves it in `nursery`."""

    def __init__(
        self,
        address: Address,
        phases: Phases,
        rng: random.Random,
        nursery: trio.Nursery,
        start: float,
    ) -> None:
        self.address = address
        self.phases = phases
        self.record = HostRecord()
        self._rng = rng
        self._nursery = nursery
        self._start = start
        self._open: set[ByteStream] = set()

    def behaviour(self) -> Behaviour:
        return self.phases.at(trio.current_time() - self._start)

    async def connect(self) -> ByteStream:
        """A new connection, once the host accepts it; ConnectionRefusedError while it is
        down (also if it went down during a slow connect)."""
        behaviour = self.behaviour()
        if behaviour.connect_latency:
            await sleep(behaviour.connect_latency)
            behaviour = self.behaviour()
        else:
            await trio.lowlevel.checkpoint()
        if behaviour.state == "down":
            self.record.refused += 1
            raise ConnectionRefusedError(f"{self.address} is down")
        ours, theirs = memory_stream_pair()
        self._nursery.start_soon(self.serve, theirs, name=f"host {self.address}")
        return ours

    async def run(self) -> None:
        """Cuts the open connections each time the host goes down."""
        for at in self.phases.down_times():
            await sleep_until(self._start + at)
            for stream in list(self._open):
                stream.close_now()

    async def serve(self, stream: ByteStream) -> None:
        """Serves one connection (a memory stream from `connect`, or an accepted TCP
        connection when the host runs on a real socket) as the script says: HTTP/2 if it
        opens with the preface (a cluster with `protocol = "http2"`), else HTTP/1.1."""
        self._open.add(stream)
        self.record.connections += 1
        try:
            first = await receive_or_eof(stream)
            while first and len(first) < len(H2_PREFACE) and H2_PREFACE.startswith(first):
                more = await receive_or_eof(stream)
                if not more:
                    return
                first += more
            if first.startswith(H2_PREFACE):
                await serve_h2(stream, first, self.decide, self.served)
            elif first:
                await self._serve_h1(stream, first)
        except (*PEER_GONE, GatewayError):
            return
        finally:
            self._open.discard(stream)
            stream.close_now()

    def decide(self, head: RequestHead) -> Answer:
        """How the host answers a request that just arrived, as its script says now."""
        tag = head.headers.get(REQUEST_TAG)
        if tag is not None:
            self.record.attempts[tag] = self.record.attempts.get(tag, 0) + 1
        behaviour = self.behaviour()
        if behaviour.state in ("hang", "down"):  # down: it went down since the connect
            self.record.cut += 1
            return Answer(behaviour.state)
        delay = draw_latency(behaviour.latency, self._rng)
        status = draw_status(behaviour.status, self._rng)
        if behaviour.state == "reset":
            self.record.cut += 1
            return Answer("reset", delay, status, behaviour.body_size or _RESET_BODY_SIZE)
        return Answer("up", delay, status, behaviour.body_size)

    async def _echo_websocket(self, stream: ByteStream, codec: ServerCodec) -> None:
        """Accepts the upgrade (101), then echoes every byte until the gateway closes."""
        switch = ResponseHead(101, HeaderMap([("upgrade", "websocket"), ("connection", "upgrade")]))
        await stream.send_all(codec.send_switching_protocols(switch) + codec.take_trailing_data())
        self.served(101)
        while data := await receive_or_eof(stream):
            await stream.send_all(data)

    def served(self, status: int) -> None:
        self.record.served[status] = self.record.served.get(status, 0) + 1

    async def _serve_h1(self, stream: ByteStream, first: bytes) -> None:
        codec = ServerCodec(max_header_bytes=_MAX_HEADER_BYTES, max_header_count=200, scheme="http")
        codec.receive_data(first)
        while (request := await _read_request(stream, codec)) is not None:
            if not await self._answer_h1(stream, codec, request) or not codec.reusable:
                return
            codec.start_next_cycle()

    async def _answer_h1(
        self, stream: ByteStream, codec: ServerCodec, request: RequestHeaders
    ) -> bool:
        """Answers as the script says; False if the connection is done."""
        answer = self.decide(request.head)
        if answer.state == "hang":
            while await receive_or_eof(stream):
                pass  # until the gateway gives up and closes
            return False
        if answer.state == "down":
            return False
        if answer.delay:
            await sleep(answer.delay)
        if request.head.upgrade == "websocket" and answer.state == "up":
            await self._echo_websocket(stream, codec)
            return False
        head = ResponseHead(answer.status, HeaderMap([("content-length", str(answer.body_size))]))
        data = codec.send_response_head(head, request_method=request.head.method)
        if answer.state == "reset":
            await stream.send_all(data + codec.send_data(b"x" * (answer.body_size // 2)))
            return False
        if answer.body_size:
            data += codec.send_data(b"x" * answer.body_size)
        await stream.send_all(data + codec.send_end())
        self.served(answer.status)
        return True


async def _read_request(stream: ByteStream, codec: ServerCodec) -> RequestHeaders | None:
    """The next request's head, its body read and dropped; None once the peer closed."""
    head: RequestHeaders | None = None
    while True:
        event = codec.next_event()
        if event is NEED_DATA:
            codec.receive_data(await receive_or_eof(stream))
        elif isinstance(event, RequestHeaders):
            head = event
            if event.end_stream:
                return head
        elif isinstance(event, Data):
            continue
        elif isinstance(event, EndStream):
            return head
        else:  # the connection ended
            return None
