"""HTTP/3 clients from outside the gateway, for the QUIC listener's end-to-end tests.

Two independent implementations, so a bug shared by the gateway and one client library
cannot hide behind it:

- aioquic's asyncio client (`QuicConnectionProtocol` and `H3Connection`, as aioquic's
  examples/http3_client.py drives them): single requests with request and response
  trailers, many concurrent streams on one QUIC connection, clients that leave in the
  middle of an exchange, and WebSocket over HTTP/3 (RFC 9220).
- niquests (urllib3-future over qh3): a request forced onto HTTP/3, and a session that
  starts on TCP and follows the Alt-Svc header it is given.

Both libraries are asyncio or blocking, so every call runs its client in a worker thread
(`trio.to_thread.run_sync`). Each carries its own deadline inside the thread: a trio
cancellation cannot interrupt the thread, and the deadline guarantees it ends.
"""

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Literal, TypeVar

import attrs
import niquests
import trio
import wsproto.events
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, ErrorCode, H3Connection, Setting
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import ConnectionTerminated, QuicEvent, StreamReset
from wsproto.connection import Connection, ConnectionState, ConnectionType

Headers = Sequence[tuple[str, str]]
T = TypeVar("T")


@attrs.frozen
class H3Peer:
    """Where a client connects and what it trusts: the UDP address, the CA file that signed
    the listener's certificate (tests/tls_helpers.py `Pki.ca_file`) and the name sent as
    SNI and checked against the certificate's SAN."""

    port: int
    ca_file: str
    server_name: str = "localhost"
    host: str = "127.0.0.1"

    @property
    def authority(self) -> str:
        return f"{self.server_name}:{self.port}"


@attrs.frozen
class H3Request:
    """One request. `authority` defaults to the peer's `server_name:port`; `trailers` are
    sent in a HEADERS frame after the body."""

    method: str = "GET"
    path: str = "/"
    headers: Headers = ()
    body: bytes = b""
    trailers: Headers = ()
    authority: str | None = None
    scheme: str = "https"


@attrs.define
class H3Response:
    """What came back on one request stream. `interim` lists the 1xx statuses seen before
    the final response; `complete` is False when the client left before the end."""

    status: int = 0
    headers: list[tuple[str, str]] = attrs.Factory(list)
    body: bytes = b""
    trailers: list[tuple[str, str]] = attrs.Factory(list)
    interim: list[int] = attrs.Factory(list)
    complete: bool = False

    def header(self, name: str) -> str | None:
        """The first value of header `name` (lowercase), or None."""
        return next((v for k, v in self.headers if k == name), None)


class H3ClientError(Exception):
    """The exchange failed below HTTP: the peer reset the stream or closed the connection.
    `response` holds what had arrived on the stream by then, if it had started."""

    def __init__(self, message: str, error_code: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.response: H3Response | None = None


class H3StreamReset(H3ClientError):
    """The peer reset the request stream (RESET_STREAM); `error_code` is its HTTP/3 code,
    e.g. `aioquic.h3.connection.ErrorCode.H3_REQUEST_REJECTED`."""


class H3ConnectionClosed(H3ClientError):
    """The QUIC connection ended (CONNECTION_CLOSE, idle timeout, failed handshake)
    before the stream did."""


# --- aioquic's asyncio client -------------------------------------------------------------


@attrs.define
class _Stream:
    """One request stream as the client protocol assembles it."""

    response: H3Response = attrs.Factory(H3Response)
    body: bytearray = attrs.Factory(bytearray)
    done: asyncio.Event = attrs.Factory(asyncio.Event)
    #: Set on the first DATA frame after the final response headers.
    data_seen: asyncio.Event = attrs.Factory(asyncio.Event)
    #: Set with the final response headers.
    headers_seen: asyncio.Event = attrs.Factory(asyncio.Event)
    error: H3ClientError | None = None
    #: A tunnel's DATA goes here instead of into `body` (WebSocket over HTTP/3); None
    #: when the stream has ended, either way.
    on_data: Callable[[bytes | None], None] | None = None

    def fail(self, error: H3ClientError) -> None:
        if not self.done.is_set():
            self.error = error
            error.response = self.response
            self.end()

    def end(self) -> None:
        self.response.body = bytes(self.body)
        self.done.set()
        self.headers_seen.set()
        self.data_seen.set()
        if self.on_data is not None:
            self.on_data(None)

    async def wait(self) -> H3Response:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.response


def _text(headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode(), v.decode()) for k, v in headers]


class _H3ClientProtocol(QuicConnectionProtocol):
    """aioquic's asyncio QUIC protocol with an HTTP/3 layer that files events by stream."""

    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)
        self.http = H3Connection(quic)
        self.streams: dict[int, _Stream] = {}
        self.settings_received = asyncio.Event()
        self.terminated: ConnectionTerminated | None = None
        #: Sends nothing more, as if the client's host had gone: no CONNECTION_CLOSE, no
        #: ACKs, no retransmissions from the pending timer.
        self.silent = False

    def transmit(self) -> None:
        if not self.silent:
            super().transmit()

    def open_stream(self, headers: list[tuple[bytes, bytes]], *, end_stream: bool) -> int:
        stream_id = self._quic.get_next_available_stream_id()
        self.streams[stream_id] = _Stream()
        self.http.send_headers(stream_id, headers, end_stream=end_stream)
        return stream_id

    def cancel(self, stream_id: int) -> None:
        """Abandons a request both ways, as RFC 9114 section 4.1.1 has a client do."""
        self._quic.reset_stream(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
        self._quic.stop_stream(stream_id, ErrorCode.H3_REQUEST_CANCELLED)
        self.transmit()

    def quic_event_received(self, event: QuicEvent) -> None:
        # H3Connection turns neither of these into HTTP events: a stream that the peer
        # resets, or a connection that ends, would otherwise be awaited forever.
        if isinstance(event, StreamReset) and event.stream_id in self.streams:
            self.streams[event.stream_id].fail(
                H3StreamReset(f"stream {event.stream_id} reset", event.error_code)
            )
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
            for stream in self.streams.values():
                stream.fail(
                    H3ConnectionClosed(
                        f"connection closed: {event.reason_phrase!r}", event.error_code
                    )
                )
            self.settings_received.set()
        for http_event in self.http.handle_event(event):
            self._http_event_received(http_event)
        if self.http.received_settings is not None:
            self.settings_received.set()

    def _http_event_received(self, event: H3Event) -> None:
        if not isinstance(event, HeadersReceived | DataReceived):
            return
        stream = self.streams.get(event.stream_id)
        if stream is None or stream.done.is_set():
            return
        response = stream.response
        if isinstance(event, HeadersReceived):
            fields = _text(event.headers)
            if response.status == 0:
                status = int(dict(fields)[":status"])
                if 100 <= status < 200:
                    response.interim.append(status)
                else:
                    response.status = status
                    response.headers = [(k, v) for k, v in fields if not k.startswith(":")]
                    stream.headers_seen.set()
            else:
                response.trailers = fields
        else:
            if stream.on_data is not None:
                stream.on_data(event.data)
            else:
                stream.body += event.data
            stream.data_seen.set()
        if event.stream_ended:
            response.complete = True
            stream.end()


Departure = Literal["reset", "close", "vanish"]


@asynccontextmanager
async def _connect(peer: H3Peer) -> AsyncIterator[_H3ClientProtocol]:
    """A QUIC connection with ALPN h3, after the handshake. On the way out it sends
    CONNECTION_CLOSE (H3_NO_ERROR) and waits for the connection to end, unless the protocol
    was made `silent`. Like aioquic's `connect()`, but this one owns the UDP socket."""
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=H3_ALPN, server_name=peer.server_name
    )
    configuration.load_verify_locations(cafile=peer.ca_file)
    loop = asyncio.get_running_loop()
    family, _, _, _, address = (
        await loop.getaddrinfo(peer.host, peer.port, type=socket.SOCK_DGRAM)
    )[0]
    protocol = _H3ClientProtocol(QuicConnection(configuration=configuration))
    # An unbound socket of the peer's family: the first sendto picks a free port.
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, family=family)
    try:
        protocol.connect(address[:2])
        try:
            await protocol.wait_connected()
        except ConnectionError:
            closed = protocol.terminated
            raise H3ConnectionClosed(
                f"handshake failed: {closed.reason_phrase if closed else ''!r}",
                closed.error_code if closed else None,
            ) from None
        yield protocol
    finally:
        if not protocol.silent:
            protocol.close(error_code=ErrorCode.H3_NO_ERROR)
            try:
                async with asyncio.timeout(1):
                    await protocol.wait_closed()
            except TimeoutError:
                pass
        transport.close()


def _request_headers(peer: H3Peer, request: H3Request) -> list[tuple[bytes, bytes]]:
    pseudo = [
        (":method", request.method),
        (":scheme", request.scheme),
        (":authority", request.authority or peer.authority),
        (":path", request.path),
    ]
    return [(k.encode(), v.encode()) for k, v in [*pseudo, *request.headers]]


def _send_request(protocol: _H3ClientProtocol, peer: H3Peer, request: H3Request) -> int:
    """Sends the whole request; returns its stream id."""
    http = protocol.http
    stream_id = protocol.open_stream(
        _request_headers(peer, request), end_stream=not request.body and not request.trailers
    )
    if request.body:
        http.send_data(stream_id, request.body, end_stream=not request.trailers)
    if request.trailers:
        trailers = [(k.encode(), v.encode()) for k, v in request.trailers]
        http.send_headers(stream_id, trailers, end_stream=True)
    protocol.transmit()
    return stream_id


async def _in_thread(main: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Runs asyncio coroutine `main()` in a worker thread, bounded by `timeout` seconds."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await main()

    return await trio.to_thread.run_sync(lambda: asyncio.run(bounded()))


async def h3_request(
    peer: H3Peer, request: H3Request = H3Request(), *, timeout: float = 10.0
) -> H3Response:
    """One request on a fresh QUIC connection, answered in full. Raises `H3StreamReset` or
    `H3ConnectionClosed` when the exchange ends below HTTP, TimeoutError after `timeout`."""

    async def main() -> H3Response:
        async with _connect(peer) as protocol:
            stream_id = _send_request(protocol, peer, request)
            return await protocol.streams[stream_id].wait()

    return await _in_thread(main, timeout)


async def h3_requests(
    peer: H3Peer, requests: Sequence[H3Request], *, timeout: float = 20.0
) -> list[H3Response]:
    """All `requests` at once, each on its own stream of ONE QUIC connection; the responses
    in the same order. Streams beyond the peer's MAX_STREAMS wait in aioquic until the peer
    raises the limit. Raises on the first stream that fails."""

    async def main() -> list[H3Response]:
        async with _connect(peer) as protocol:
            ids = [_send_request(protocol, peer, request) for request in requests]
            return [await protocol.streams[i].wait() for i in ids]

    return await _in_thread(main, timeout)


async def h3_abandon(
    peer: H3Peer,
    request: H3Request,
    *,
    at: Literal["request", "response"],
    how: Departure,
    pause: float = 0.2,
    linger: float = 0.5,
    timeout: float = 10.0,
) -> H3Response:
    """A client that goes away in the middle of an exchange; returns what it had received.

    `at="request"`: sends the headers and the first half of `request.body` without ending
    the stream, waits `pause` seconds, leaves. `at="response"`: sends the whole request,
    waits for the first DATA frame of the response, leaves.

    `how="reset"`: cancels the stream the way a browser does (RESET_STREAM and STOP_SENDING
    with H3_REQUEST_CANCELLED), keeps the connection `linger` seconds, then closes it.
    `how="close"`: CONNECTION_CLOSE (H3_NO_ERROR) at once. `how="vanish"`: closes the UDP
    socket and sends nothing, so the peer only learns by its idle timeout."""

    async def main() -> H3Response:
        async with _connect(peer) as protocol:
            if at == "request":
                stream_id = protocol.open_stream(_request_headers(peer, request), end_stream=False)
                if half := request.body[: len(request.body) // 2]:
                    protocol.http.send_data(stream_id, half, end_stream=False)
                protocol.transmit()
                await asyncio.sleep(pause)
            else:
                stream_id = _send_request(protocol, peer, request)
                await protocol.streams[stream_id].data_seen.wait()
            stream = protocol.streams[stream_id]
            stream.response.body = bytes(stream.body)
            if how == "reset":
                protocol.cancel(stream_id)
                await asyncio.sleep(linger)
            elif how == "vanish":
                protocol.silent = True
            return stream.response

    return await _in_thread(main, timeout)


# --- WebSocket over HTTP/3 (RFC 9220) -----------------------------------------------------


@attrs.define
class H3WebSocketResult:
    """How a WebSocket over HTTP/3 went. `status` is the CONNECT response's (200 accepts);
    `replies` holds one message per message sent, until the server closed; `close_code`
    and `close_reason` are from the server's Close frame: 1006 if the stream ended without
    one, None if neither happened (a stream reset raises instead)."""

    status: int
    headers: list[tuple[str, str]]
    replies: list[str | bytes] = attrs.Factory(list)
    close_code: int | None = None
    close_reason: str = ""


@attrs.define
class _WebSocket:
    """wsproto's frame layer (no HTTP/1.1 handshake) over the DATA of one request stream."""

    protocol: _H3ClientProtocol
    stream_id: int
    ws: Connection = attrs.Factory(lambda: Connection(ConnectionType.CLIENT))
    #: Whole messages; None once the server has closed or the stream has ended.
    messages: asyncio.Queue[str | bytes | None] = attrs.Factory(asyncio.Queue)
    #: The frames of the message being received.
    partial: list[str | bytes] = attrs.Factory(list)
    close: wsproto.events.CloseConnection | None = None
    ended: bool = False

    def send(self, event: wsproto.events.Event) -> None:
        # Nothing may follow a Close frame (RFC 6455 section 5.5.1), so it carries our
        # FIN: the WebSocket's TCP half-close (RFC 8441 section 5, RFC 9220 section 3).
        last = isinstance(event, wsproto.events.CloseConnection)
        self.protocol.http.send_data(self.stream_id, self.ws.send(event), end_stream=last)
        self.ended = self.ended or last
        self.protocol.transmit()

    def finish(self) -> None:
        """Ends our side of the stream if no Close frame has."""
        if not self.ended:
            self.ended = True
            self.protocol.http.send_data(self.stream_id, b"", end_stream=True)
            self.protocol.transmit()

    def on_data(self, data: bytes | None) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, wsproto.events.Message):
                self.partial.append(event.data)
                if event.message_finished:
                    self.messages.put_nowait(_join(self.partial))
                    self.partial.clear()
            elif isinstance(event, wsproto.events.Ping) and not self.ended:
                self.send(event.response())
            elif isinstance(event, wsproto.events.CloseConnection):
                self.close = event
                # data None is the stream's end: no stream left to answer on.
                if self.ws.state is ConnectionState.REMOTE_CLOSING and data is not None:
                    self.send(event.response())
                self.messages.put_nowait(None)
        if data is None:
            self.messages.put_nowait(None)


def _join(frames: list[str | bytes]) -> str | bytes:
    if all(isinstance(frame, str) for frame in frames):
        return "".join(str(frame) for frame in frames)
    return b"".join(frame for frame in frames if isinstance(frame, bytes))


async def h3_websocket(
    peer: H3Peer,
    path: str,
    messages: Sequence[str | bytes],
    *,
    headers: Headers = (),
    subprotocols: Sequence[str] = (),
    authority: str | None = None,
    timeout: float = 10.0,
) -> H3WebSocketResult:
    """Opens a WebSocket with an extended CONNECT (`:protocol websocket`), sends each of
    `messages` and waits for one reply to each, then closes with 1000 and waits for the
    server's Close. Stops early if the server closes. A refused CONNECT (status other than
    200) returns at once with the status and headers.

    Raises H3ClientError if the server's SETTINGS lack SETTINGS_ENABLE_CONNECT_PROTOCOL=1:
    RFC 9220 section 3 forbids the client to send an extended CONNECT without it."""

    async def main() -> H3WebSocketResult:
        async with _connect(peer) as protocol:
            await protocol.settings_received.wait()
            settings = protocol.http.received_settings or {}
            if settings.get(Setting.ENABLE_CONNECT_PROTOCOL) != 1:
                raise H3ClientError(f"no SETTINGS_ENABLE_CONNECT_PROTOCOL in {settings}")
            request_headers = [
                (":method", "CONNECT"),
                (":protocol", "websocket"),
                (":scheme", "https"),
                (":authority", authority or peer.authority),
                (":path", path),
                ("sec-websocket-version", "13"),
                *headers,
            ]
            if subprotocols:
                request_headers.append(("sec-websocket-protocol", ", ".join(subprotocols)))
            stream_id = protocol.open_stream(
                [(k.encode(), v.encode()) for k, v in request_headers], end_stream=False
            )
            stream = protocol.streams[stream_id]
            websocket = _WebSocket(protocol, stream_id)
            stream.on_data = websocket.on_data
            protocol.transmit()
            await stream.headers_seen.wait()
            if stream.error is not None:
                raise stream.error
            result = H3WebSocketResult(stream.response.status, stream.response.headers)
            if result.status != 200:
                return result
            for message in messages:
                if websocket.close is not None or stream.done.is_set():
                    break
                event: wsproto.events.Event = (
                    wsproto.events.TextMessage(message)
                    if isinstance(message, str)
                    else wsproto.events.BytesMessage(message)
                )
                websocket.send(event)
                reply = await websocket.messages.get()
                if reply is None:
                    break
                result.replies.append(reply)
            if websocket.close is None and not stream.done.is_set():
                websocket.send(wsproto.events.CloseConnection(code=1000))
                while await websocket.messages.get() is not None:
                    pass
            if stream.error is not None:
                raise stream.error
            websocket.finish()
            if websocket.close is not None:
                result.close_code = websocket.close.code
                result.close_reason = websocket.close.reason or ""
            return result

    return await _in_thread(main, timeout)


# --- niquests (urllib3-future over qh3) ---------------------------------------------------


@attrs.define
class NiquestsResponse:
    """`http_version` is niquests' own: 11, 20 or 30."""

    status: int
    headers: dict[str, str]
    body: bytes
    http_version: int


def _niquests_session(peer: H3Peer, *, h3_only: bool) -> niquests.Session:
    # The in-memory resolver sends `server_name` to `host` whatever /etc/hosts says
    # ("localhost" may resolve to ::1 first, where nothing listens).
    resolver = f"in-memory://default/?hosts={peer.server_name}:{peer.host}"
    if h3_only:
        # With HTTP/1.1 and HTTP/2 both disabled, urllib3-future connects over QUIC at once,
        # with no TCP connection to learn Alt-Svc from, and no fallback to TCP.
        return niquests.Session(
            resolver=resolver, retries=0, disable_http1=True, disable_http2=True
        )
    return niquests.Session(resolver=resolver, retries=0)


def _niquests_call(
    session: niquests.Session,
    peer: H3Peer,
    method: str,
    path: str,
    headers: Headers,
    body: bytes,
    timeout: float,
) -> NiquestsResponse:
    response = session.request(
        method,
        f"https://{peer.authority}{path}",
        headers=dict(headers),
        data=body or None,
        verify=peer.ca_file,
        timeout=timeout,
    )
    return NiquestsResponse(
        response.status_code or 0,
        dict(response.headers),
        response.content or b"",
        response.http_version or 0,
    )


async def niquests_h3_request(
    peer: H3Peer,
    method: str = "GET",
    path: str = "/",
    *,
    headers: Headers = (),
    body: bytes = b"",
    timeout: float = 10.0,
) -> NiquestsResponse:
    """One request with niquests, over HTTP/3 only (QUIC to `peer.port` straight away)."""

    def call() -> NiquestsResponse:
        with _niquests_session(peer, h3_only=True) as session:
            return _niquests_call(session, peer, method, path, headers, body, timeout)

    return await trio.to_thread.run_sync(call)


async def niquests_follow_alt_svc(
    peer: H3Peer, path: str = "/", *, count: int = 3, timeout: float = 10.0
) -> list[NiquestsResponse]:
    """`count` GETs in one niquests session with every protocol enabled, to a TLS listener
    over TCP (`peer.port` is the TCP port here). After a 2xx response that carries
    `alt-svc: h3=":UDP_PORT"`, urllib3-future moves the session to HTTP/3 on that port:
    the `http_version`s show whether and when it did, e.g. [20, 30, 30]."""

    def call() -> list[NiquestsResponse]:
        with _niquests_session(peer, h3_only=False) as session:
            return [
                _niquests_call(session, peer, "GET", path, (), b"", timeout) for _ in range(count)
            ]

    return await trio.to_thread.run_sync(call)
