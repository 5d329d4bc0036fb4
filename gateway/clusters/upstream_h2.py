"""One HTTP/2 connection to an upstream host, and the streams requests borrow from it.

The connection's reader task lives in the cluster's nursery, not in any request's: the
connection outlives the requests that use it. The reader dispatches h2 events into each
stream's channel; a stream's channel is unbounded in items but bounded in bytes by the
window we grant, and bytes are credited back only when the router has taken them, i.e. sent
them downstream. So a slow client slows the upstream, with no buffer in between.

A stream that ends before both directions finished (client gone, timeout, error) is reset
with CANCEL, which is how an upstream gRPC servicer learns that its call was cancelled.
"""

import contextlib
import time
from collections.abc import Callable, Iterator

import h2.errors
import h2.events
import h2.exceptions
import trio

from gateway.config.model import Cluster
from gateway.errors import UpstreamReset
from gateway.io.byte_stream import ByteStream
from gateway.protocol.codec_h1 import ClientEvent
from gateway.protocol.events import NEED_DATA, ConnectionEnded, Data, EndStream, ResponseHeaders
from gateway.protocol.h2_transport import FlowControlTimeout, H2Transport, new_connection
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead

#: Request headers that HTTP/2 forbids or carries as pseudo-headers.
_NOT_FORWARDED = frozenset({"host", "transfer-encoding", "connection", "keep-alive"})


class H2UpstreamStream:
    """One request's stream on a shared upstream connection (an UpstreamStream)."""

    def __init__(self, conn: "H2UpstreamConnection", stream_id: int) -> None:
        self._conn = conn
        self.stream_id = stream_id
        self.events_send, self._events = trio.open_memory_channel[ClientEvent](float("inf"))
        self.uncredited = 0
        self._to_credit = 0
        self.request_done = False
        self.response_done = False
        self._peer_ended = False
        #: The upstream refused the stream unprocessed (REFUSED_STREAM, or beyond GOAWAY's
        #: last stream id): safe to retry whatever the request.
        self.refused = False

    async def send_request_head(self, head: RequestHead, end_stream: bool) -> None:
        pseudo = [
            (b":method", head.method.encode()),
            (b":scheme", b"https" if self._conn.config.tls is not None else b"http"),
            (b":authority", head.authority.encode("latin-1")),
            (b":path", head.path.encode("latin-1")),
        ]
        headers = pseudo + [
            (n.encode("latin-1"), v.encode("latin-1"))
            for n, v in head.headers
            if n not in _NOT_FORWARDED
        ]
        with _stream_errors():
            self._conn.transport.h2.send_headers(self.stream_id, headers, end_stream=end_stream)
        self.request_done = end_stream
        await self._conn.transport.flush()

    async def send_data(self, data: bytes) -> None:
        if self._peer_ended:
            return  # the upstream answered in full: it wants no more of the request
        with _stream_errors():
            await self._conn.transport.send_data(
                self.stream_id, data, False, self._conn.config.pool_timeout
            )

    async def send_end(self, trailers: HeaderMap | None) -> None:
        transport = self._conn.transport
        if self._peer_ended:
            # A complete response may be followed by RST_STREAM(NO_ERROR) telling us to
            # stop sending (RFC 9113 8.1): the exchange succeeded, the request need not end.
            self.request_done = True
            return
        with _stream_errors():
            if trailers:
                wire = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in trailers]
                transport.h2.send_headers(self.stream_id, wire, end_stream=True)
            else:
                transport.h2.end_stream(self.stream_id)
        self.request_done = True
        await transport.flush()

    async def receive_event(self) -> ClientEvent:
        await self._credit()
        try:
            event = await self._events.receive()
        except trio.EndOfChannel:
            return ConnectionEnded()
        return self._took(event)

    def next_event_nowait(self) -> ClientEvent:
        try:
            return self._took(self._events.receive_nowait())
        except trio.WouldBlock:
            return NEED_DATA
        except trio.EndOfChannel:
            return ConnectionEnded()

    def peer_ended(self, trailers: HeaderMap | None) -> None:
        """The upstream ended its side (trailers come first, then h2's StreamEnded)."""
        if not self._peer_ended:
            self._peer_ended = True
            self.events_send.send_nowait(EndStream(self.stream_id, trailers))
            self.events_send.close()

    def _took(self, event: ClientEvent) -> ClientEvent:
        if isinstance(event, Data):
            self._to_credit += len(event.data)
        elif isinstance(event, EndStream):
            self.response_done = True
        return event

    async def _credit(self) -> None:
        """The previous chunk went downstream: let the upstream send that much more."""
        if self._to_credit:
            size = min(self._to_credit, self.uncredited)
            self._to_credit = 0
            self.uncredited -= size
            self._conn.transport.acknowledge(self.stream_id, size)
            await self._conn.transport.flush()

    def finish(self) -> bool:
        """Called when the borrower is done; True if the stream must be flushed (reset)."""
        conn = self._conn
        conn.streams.pop(self.stream_id, None)
        conn.transport.acknowledge(self.stream_id, self.uncredited)
        if self.request_done and self.response_done:
            return self.uncredited > 0
        conn.transport.reset(self.stream_id, h2.errors.ErrorCodes.CANCEL)
        return True


class H2UpstreamConnection:
    def __init__(
        self,
        stream: ByteStream,
        host: str,
        config: Cluster,
        on_capacity_change: Callable[[], None],
    ) -> None:
        self.host = host
        #: Tells the pool that streams may now be available (or gone).
        self._capacity_changed = on_capacity_change
        self.config = config
        options = config.http2
        self.transport = H2Transport(
            stream,
            new_connection(client_side=True, options=options),
            options.initial_connection_window_size,
            UpstreamReset,
        )
        self.streams: dict[int, H2UpstreamStream] = {}
        self.draining = False
        self.closed = False
        self.idle_since = time.monotonic()
        self._ping_acked = trio.Event()

    def __repr__(self) -> str:
        return f"<H2UpstreamConnection {self.host} streams={len(self.streams)}>"

    @property
    def max_streams(self) -> int:
        peer = self.transport.h2.remote_settings.max_concurrent_streams
        return min(self.config.http2.max_concurrent_streams, peer)

    @property
    def available(self) -> bool:
        return not (self.closed or self.draining) and len(self.streams) < self.max_streams

    def open_stream(self) -> H2UpstreamStream:
        stream_id = self.transport.h2.get_next_available_stream_id()
        stream = H2UpstreamStream(self, stream_id)
        self.streams[stream_id] = stream
        return stream

    async def run(self) -> None:
        """The reader task (and its keepalive pinger), until the connection ends."""
        transport = self.transport
        try:
            async with trio.open_nursery() as nursery:
                if self.config.http2.keepalive_interval > 0:
                    nursery.start_soon(self._keepalive, name=f"h2 keepalive {self.host}")
                try:
                    while not transport.broken:
                        data = await transport.receive()
                        if not data:
                            break
                        self._dispatch(transport.h2.receive_data(data))
                        await transport.flush()
                except (h2.exceptions.ProtocolError, UpstreamReset):
                    pass
                nursery.cancel_scope.cancel()
        finally:
            self.close()

    def _dispatch(self, events: list[h2.events.Event]) -> None:
        for event in events:
            stream = self.streams.get(getattr(event, "stream_id", 0))
            if isinstance(event, h2.events.ResponseReceived) and stream is not None:
                head = _response_head(event.headers)
                ended = event.stream_ended is not None
                stream.events_send.send_nowait(ResponseHeaders(event.stream_id, head, ended))
                if ended:
                    stream.peer_ended(None)
            elif isinstance(event, h2.events.DataReceived):
                if stream is None:
                    self.transport.acknowledge(event.stream_id, event.flow_controlled_length)
                    continue
                self.transport.acknowledge(
                    event.stream_id, event.flow_controlled_length - len(event.data)
                )
                if event.data:
                    stream.uncredited += len(event.data)
                    stream.events_send.send_nowait(Data(event.stream_id, event.data))
            elif isinstance(event, h2.events.TrailersReceived) and stream is not None:
                stream.peer_ended(HeaderMap.from_raw(event.headers))
            elif isinstance(event, h2.events.StreamEnded) and stream is not None:
                stream.peer_ended(None)
            elif isinstance(event, h2.events.StreamReset) and stream is not None:
                stream.refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
                stream.events_send.close()  # the reader sees ConnectionEnded: UpstreamReset
            elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
                self.transport.window_changed()
                self._capacity_changed()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.draining = True
                last = event.last_stream_id or 0
                for stream_id, s in list(self.streams.items()):
                    if stream_id > last:  # never processed: the borrower sees a reset
                        s.refused = True
                        s.events_send.close()
                self._capacity_changed()
            elif isinstance(event, h2.events.PingAckReceived):
                self._ping_acked.set()

    async def _keepalive(self) -> None:
        options = self.config.http2
        while True:
            await trio.sleep(options.keepalive_interval)
            if self.closed:
                return  # closed meanwhile (reaped, drained): the reader is ending too
            self._ping_acked = trio.Event()
            try:
                self.transport.h2.ping(b"gateway!")
                await self.transport.flush()
            except (h2.exceptions.ProtocolError, UpstreamReset):
                # The connection failed under the ping: it ends here, not the cluster.
                self.close()
                return
            with trio.move_on_after(options.keepalive_timeout) as scope:
                await self._ping_acked.wait()
            if scope.cancelled_caught:
                self.transport.broken = True
                self.close()
                return

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for stream in self.streams.values():
            stream.events_send.close()
        self.transport.stream.close_now()
        self.transport.release()
        self._capacity_changed()


@contextlib.contextmanager
def _stream_errors() -> Iterator[None]:
    """h2 errors on one stream (reset under us, window shut too long) are upstream resets."""
    try:
        yield
    except (h2.exceptions.ProtocolError, FlowControlTimeout) as exc:
        raise UpstreamReset(f"upstream HTTP/2 stream failed: {exc!r}") from exc


def _response_head(headers: list[tuple[bytes, bytes]]) -> ResponseHead:
    status = 200
    regular = []
    for name, value in headers:
        if name == b":status":
            status = int(value)
        elif not name.startswith(b":"):
            regular.append((name, value))
    return ResponseHead(status, HeaderMap.from_raw(regular))
