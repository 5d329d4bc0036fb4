"""One HTTP/1.1 connection to an upstream host: a Trio stream driven by the client codec.

This is the transport edge for upstreams: trio's Broken/ClosedResourceError and OSError
become `UpstreamReset` here, once, so the router deals in gateway errors only. A write that
raises (or is cancelled) may have sent any prefix of its bytes, so after any failure the
connection is marked broken and the pool closes it instead of reusing it.
"""

import enum

import trio

from gateway.errors import UpstreamReset
from gateway.io.byte_stream import ByteStream
from gateway.io.fast_io import Receiver
from gateway.io.trio_util import PEER_GONE
from gateway.io.tunnel import SocketEndpoint
from gateway.protocol.codec_h1 import ClientEvent, Http1Parser
from gateway.protocol.codec_h1_client import ClientCodec
from gateway.protocol.events import NEED_DATA
from gateway.protocol.headers import HeaderMap, RequestHead


class UpstreamState(enum.Enum):
    """Envoy's ActiveClient states, minus CONNECTING (a connection exists once connected)."""

    READY = "ready"
    BUSY = "busy"
    CLOSED = "closed"


class UpstreamConnection:
    __slots__ = (
        "_receiver",
        "codec",
        "host",
        "idle_since",
        "keep_alive",
        "requests",
        "state",
        "stream",
    )

    def __init__(
        self,
        stream: ByteStream,
        host: str,
        *,
        max_header_bytes: int,
        parser: Http1Parser = "llhttp",
    ) -> None:
        self.stream = stream
        self.host = host
        self.codec = ClientCodec(max_header_bytes=max_header_bytes, parser=parser)
        self.state = UpstreamState.READY
        #: On trio's clock, as the pool's idle_timeout is (a test's MockClock included).
        self.idle_since = trio.current_time()
        self.requests = 0
        #: Cleared when the exchange left the connection unfit for another (a refused upgrade).
        self.keep_alive = True
        self._receiver = Receiver(stream)

    #: HTTP/1.1 has no way to refuse a request unprocessed.
    refused = False

    def __repr__(self) -> str:
        return f"<UpstreamConnection {self.host} {self.state.value} requests={self.requests}>"

    # -- UpstreamStream ------------------------------------------------------------------

    async def send_request_head(self, head: RequestHead, end_stream: bool) -> None:
        data = self._encode_head(head, end_stream)
        await self._send(data + self.codec.send_end() if end_stream else data)

    async def send_request(
        self, head: RequestHead, body: bytes, trailers: HeaderMap | None
    ) -> None:
        codec = self.codec
        data = self._encode_head(head, end_stream=False)
        if body:
            data += codec.send_data(body)
        await self._send(data + codec.send_end(trailers))

    def _encode_head(self, head: RequestHead, end_stream: bool) -> bytes:
        headers = head.headers
        headers.set("host", head.authority)
        if not end_stream and "content-length" not in headers:
            headers.set("transfer-encoding", "chunked")
        return self.codec.send_request_head(head)

    async def send_data(self, data: bytes) -> None:
        await self._send(self.codec.send_data(data))

    async def send_end(self, trailers: HeaderMap | None) -> None:
        await self._send(self.codec.send_end(trailers))

    def next_event_nowait(self) -> ClientEvent:
        return self.codec.next_event()

    def tunnel_endpoint(self) -> SocketEndpoint:
        """After a 101: the raw socket, for a tunnel. The pool discards the connection
        afterwards (the codec stopped parsing at the switch, so it is never reusable)."""
        return SocketEndpoint(self.stream, self.codec.take_trailing_data())

    async def _send(self, data: bytes) -> None:
        # One task writes at a time here (the head, then the upload), so a write that the
        # socket takes at once needs no trip through the scheduler (gateway/io/fast_io.py).
        try:
            sent = self.stream.send_now(data)
            if sent < len(data):
                await self.stream.send_all(data[sent:] if sent else data)
        except PEER_GONE as exc:
            self.codec.send_failed()
            raise UpstreamReset(f"upstream write failed: {exc!r}") from exc
        except BaseException:
            self.codec.send_failed()
            raise

    async def receive_event(self) -> ClientEvent:
        """The next response event, reading from the socket as needed."""
        codec = self.codec
        while True:
            event = codec.next_event()
            if event is not NEED_DATA:
                return event
            try:
                data = await self._receiver.receive()
            except PEER_GONE as exc:
                raise UpstreamReset(f"upstream read failed: {exc!r}") from exc
            codec.receive_data(data)

    def is_stale(self) -> bool:
        """An idle connection with something to read has been closed (or spoken out of turn)
        by the upstream; reusing it would lose the request."""
        return self.stream.is_readable()

    def close(self) -> None:
        """Closes at once, without a checkpoint, so it is safe in `finally` and when cancelled."""
        self.state = UpstreamState.CLOSED
        self.stream.close_now()
        self.codec.close()
