"""The data path without sockets: in-memory connections, a network of in-test upstreams,
and the gateway's own pieces wired over them, for tests that run on trio's MockClock.

- `MemoryStream` (from `gateway.testing`, where the scenario engine uses it too) is one
  end of `trio.testing.memory_stream_pair()` as a `ByteStream`.
- `MemoryNetwork` is an `UpstreamConnector`: each connect to an address gets a new pair,
  one end served by the upstream the test put at that address, the other the gateway's
  (which puts TLS over it for a cluster with `tls`, as over TCP).
- `H1Upstream` (h11) and `H2Upstream` (h2) serve those ends; `H1Client` is an HTTP/1.1
  client for the gateway's listener side.
- `memory_gateway` is `gateway.testing`'s in-memory gateway (what a listener builds:
  clusters, filter chains with the HTTP connection manager) from a `ConfigBuilder` config,
  over a `MemoryNetwork`, terminating TLS as the listener does.
"""

import collections
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import attrs
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h11
import trio
import trio.testing

from gateway import loads_config
from gateway.clusters.manager import ClusterManager
from gateway.config.model import Address
from gateway.io.byte_stream import ByteStream
from gateway.io.tls_stream import TlsStream
from gateway.io.trio_util import PEER_GONE
from gateway.listeners.filter_chain import FilterChain
from gateway.observability.stats import StatsStore
from gateway.testing.memory_gateway import MemoryGateway, open_memory_gateway
from gateway.testing.memory_stream import MemoryStream, memory_stream_pair
from tests.config_builder import ConfigBuilder

Handler = Callable[[ByteStream], Awaitable[None]]


class MemoryNetwork:
    """An `UpstreamConnector` whose connections are memory streams: a connect to an address
    with a handler (`listen`) starts the handler on the far end in `nursery`; a connect
    to any other address is refused, as a closed port refuses."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._handlers: dict[str, Handler] = {}
        #: Connections opened, by address ("127.0.0.1:8001").
        self.connects: collections.Counter[str] = collections.Counter()

    def listen(self, address: str, handler: Handler) -> None:
        self._handlers[address] = handler

    async def __call__(self, address: Address) -> ByteStream:
        await trio.lowlevel.checkpoint()
        handler = self._handlers.get(str(address))
        if handler is None:
            raise ConnectionRefusedError(f"nothing listens on {address}")
        ours, theirs = memory_stream_pair(record_writes=True)
        self.connects[str(address)] += 1
        self._nursery.start_soon(handler, theirs, name=f"upstream {address}")
        return ours


@attrs.define
class TlsServer:
    """Puts a TLS server over an upstream's connections (`listen(address,
    TlsServer(context, upstream.serve))`), and records each handshake's SNI and ALPN."""

    context: ssl.SSLContext
    handler: Handler
    #: (server name, ALPN protocol) of each handshake, in order.
    handshakes: list[tuple[str | None, str | None]] = attrs.Factory(list)

    async def __call__(self, stream: ByteStream) -> None:
        names: list[str | None] = []
        self.context.sni_callback = lambda _sock, name, _context: names.append(name)
        tls = trio.SSLStream(stream, self.context, server_side=True, https_compatible=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError:
            stream.close_now()  # the gateway refused the certificate
            return
        self.handshakes.append((names[0] if names else None, tls.selected_alpn_protocol()))
        await self.handler(TlsStream(tls))


@attrs.define
class SeenRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    #: Which of the upstream's connections it came on (0 for the first).
    connection: int


#: An upstream's answer: status, headers, body.
Answer = tuple[int, list[tuple[str, str]], bytes]
Respond = Callable[[SeenRequest], Awaitable[Answer]]


async def _ok(request: SeenRequest) -> Answer:
    return 200, [("content-type", "text/plain")], f"{request.method} {request.target}".encode()


_Head = h11.Request | h11.InformationalResponse | h11.Response


async def _next_message(conn: h11.Connection, stream: ByteStream) -> tuple[_Head, bytes] | None:
    """The next message's head and body, read from `stream` as needed (an informational
    response, a 101, comes alone); None once the peer closed."""
    head: _Head | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some()))
        elif isinstance(event, h11.InformationalResponse):
            return event, b""
        elif isinstance(event, h11.Request | h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head, body
        else:  # ConnectionClosed
            return None


@attrs.define(eq=False)
class H1Upstream:
    """An HTTP/1.1 server (h11) on the far end of `MemoryNetwork` connections, with
    keep-alive: answers each request with `respond`, and records what it saw."""

    respond: Respond = _ok
    #: Requests a connection serves before this side closes it (as a server whose own
    #: idle timeout is shorter than the gateway's does), without saying so in the response.
    max_requests_per_connection: int | None = None
    requests: list[SeenRequest] = attrs.Factory(list)
    connections: int = 0
    #: Connections that ended (the gateway closed them, or this side did).
    closed: int = 0
    _closing: trio.Event = attrs.Factory(trio.Event)

    async def wait_closed(self, count: int = 1) -> None:
        """Returns once `count` connections have ended."""
        while self.closed < count:
            await self._closing.wait()

    async def serve(self, stream: ByteStream) -> None:
        index = self.connections
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        served = 0
        try:
            while (message := await _next_message(conn, stream)) is not None:
                head, body = message
                assert isinstance(head, h11.Request)
                if any(name == b"upgrade" for name, _ in head.headers):
                    await self._echo_after_upgrade(stream, conn, head, index)
                    return
                await self._answer(stream, conn, head, body, index)
                served += 1
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                if served == self.max_requests_per_connection:
                    return
                conn.start_next_cycle()
        except (*PEER_GONE, h11.RemoteProtocolError):
            return
        finally:
            stream.close_now()
            self.closed += 1
            self._closing.set()
            self._closing = trio.Event()

    def _seen(self, head: h11.Request, body: bytes, index: int) -> SeenRequest:
        seen = SeenRequest(
            head.method.decode(),
            head.target.decode(),
            {k.decode(): v.decode() for k, v in head.headers},
            body,
            index,
        )
        self.requests.append(seen)
        return seen

    async def _echo_after_upgrade(
        self, stream: ByteStream, conn: h11.Connection, head: h11.Request, index: int
    ) -> None:
        """Accepts an upgrade (101), then echoes bytes until the client half-closes."""
        self._seen(head, b"", index)
        switch = h11.InformationalResponse(
            status_code=101, headers=[("upgrade", "websocket"), ("connection", "upgrade")]
        )
        await stream.send_all(conn.send(switch))
        data, _ = conn.trailing_data
        while True:
            if data:
                await stream.send_all(data)
            data = bytes(await stream.receive_some())
            if not data:
                return

    async def _answer(
        self, stream: ByteStream, conn: h11.Connection, head: h11.Request, body: bytes, index: int
    ) -> None:
        seen = self._seen(head, body, index)
        status, headers, payload = await self.respond(seen)
        headers = [*headers, ("content-length", str(len(payload)))]
        data = conn.send(h11.Response(status_code=status, headers=headers))
        data += conn.send(h11.Data(data=payload)) if payload else b""
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)


@attrs.define(eq=False)
class H2Upstream:
    """An HTTP/2 server (h2) on the far end of `MemoryNetwork` connections: answers each
    stream with `respond`, streams concurrently, and records what it saw."""

    respond: Respond = _ok
    #: Trailers each answer ends with (as a gRPC server ends a call with its status).
    trailers: list[tuple[str, str]] | None = None
    requests: list[SeenRequest] = attrs.Factory(list)
    connections: int = 0

    async def serve(self, stream: ByteStream) -> None:
        index = self.connections
        self.connections += 1
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        conn.initiate_connection()
        send_lock = trio.Lock()
        heads: dict[int, dict[str, str]] = {}
        bodies: dict[int, bytes] = {}

        async def flush() -> None:
            async with send_lock:
                with contextlib.suppress(*PEER_GONE):  # gone: the read loop sees it next
                    await stream.send_all(conn.data_to_send())

        async def answer(stream_id: int) -> None:
            head = heads.pop(stream_id)
            seen = SeenRequest(
                head.pop(":method"), head.pop(":path"), head, bodies.pop(stream_id), index
            )
            self.requests.append(seen)
            status, headers, payload = await self.respond(seen)
            fields = [(":status", str(status)), *headers, ("content-length", str(len(payload)))]
            conn.send_headers(stream_id, fields)
            conn.send_data(stream_id, payload, end_stream=self.trailers is None)
            if self.trailers is not None:
                conn.send_headers(stream_id, self.trailers, end_stream=True)
            await flush()

        try:
            async with trio.open_nursery() as nursery:
                await flush()
                while data := await stream.receive_some():
                    for event in conn.receive_data(bytes(data)):
                        if isinstance(event, h2.events.RequestReceived):
                            heads[event.stream_id] = {
                                k.decode(): v.decode() for k, v in event.headers or []
                            }
                            bodies[event.stream_id] = b""
                        elif isinstance(event, h2.events.DataReceived):
                            bodies[event.stream_id] += event.data or b""
                            conn.acknowledge_received_data(
                                event.flow_controlled_length, event.stream_id
                            )
                        elif isinstance(event, h2.events.StreamEnded):
                            nursery.start_soon(answer, event.stream_id)
                    await flush()
                nursery.cancel_scope.cancel()  # the gateway closed: answers in flight go
        except (*PEER_GONE, h2.exceptions.ProtocolError):
            return
        finally:
            stream.close_now()


@attrs.define
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class H1Client:
    """An HTTP/1.1 client (h11) over one connection, keep-alive across requests."""

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self._conn = h11.Connection(h11.CLIENT)

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response:
        """One exchange; the request (with `body`, if any) goes in one write."""
        if self._conn.our_state is h11.DONE:
            self._conn.start_next_cycle()
        fields = [("host", "example.com"), *(headers or [])]
        if body:
            fields.append(("content-length", str(len(body))))
        head = h11.Request(method=method, target=target, headers=fields)
        data = self._conn.send(head) + (self._conn.send(h11.Data(data=body)) if body else b"")
        await self.stream.send_all(data + self._conn.send(h11.EndOfMessage()))
        message = await _next_message(self._conn, self.stream)
        assert message is not None, "the gateway closed the connection without a response"
        response, body = message
        assert isinstance(response, h11.Response)
        fields = {k.decode(): v.decode() for k, v in response.headers}
        return Response(response.status_code, fields, body)

    async def upgrade(self, target: str) -> int:
        """Asks for a WebSocket upgrade; the status of the answer. After a 101 the stream
        carries the tunnel's bytes."""
        headers = [("connection", "upgrade"), ("upgrade", "websocket")]
        head = h11.Request(method="GET", target=target, headers=[("host", "example.com"), *headers])
        await self.stream.send_all(self._conn.send(head) + self._conn.send(h11.EndOfMessage()))
        message = await _next_message(self._conn, self.stream)
        assert message is not None, "the gateway closed the connection without a response"
        assert not self._conn.trailing_data[0], "tunnel bytes before any were sent"
        answer = message[0]
        assert not isinstance(answer, h11.Request)
        return answer.status_code

    async def wait_closed(self) -> None:
        """Returns when the gateway closed the connection (EOF)."""
        while await self.stream.receive_some():
            pass


@attrs.define(eq=False)
class TestGateway:
    """A test's in-memory gateway (`gateway.testing`'s, over a `MemoryNetwork`): the
    listener `edge`, its first filter chain, the clusters, the stats."""

    memory: MemoryGateway
    network: MemoryNetwork

    @property
    def store(self) -> StatsStore:
        return self.memory.store

    @property
    def clusters(self) -> ClusterManager:
        return self.memory.clusters

    @property
    def chain(self) -> FilterChain:
        return self.memory.listeners["edge"].chains[0]

    def connect(self, peer: str = "10.0.0.7:40000", server_name: str | None = None) -> MemoryStream:
        """A client connection to the listener, handed to the chain's network filters as
        the listener hands an accepted one (after the TLS handshake, if the chain
        terminates TLS; `server_name` is the SNI the listener's inspector would have
        read), and closed, as the listener closes it, when they end."""
        return self.memory.connect("edge", peer=peer, server_name=server_name)

    def stat(self, name: str) -> int:
        """A counter's or gauge's value, by its Envoy name."""
        value = self.store.value(name)
        assert value is not None, f"no stat {name}"
        return value


@asynccontextmanager
async def memory_gateway(config: ConfigBuilder) -> AsyncIterator[TestGateway]:
    """The clusters and listener `edge` of `config`, running over a `MemoryNetwork`; the
    test puts upstreams on it (`gw.network.listen`) before it sends requests."""
    loaded = loads_config(config.toml())
    # A test that waits for what never comes would otherwise run forever in virtual time
    # (the pools' reapers keep waking up): it fails after a virtual hour instead.
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            network = MemoryNetwork(nursery)
            opened = open_memory_gateway(loaded, network, terminate_tls=True, record_writes=True)
            async with opened as memory:
                yield TestGateway(memory, network)
            nursery.cancel_scope.cancel()
