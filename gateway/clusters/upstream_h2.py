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
from collections.abc import Callable, Iterator

import trio

from gateway.config.model import Cluster
from gateway.errors import UpstreamReset
from gateway.io.byte_stream import ByteStream
from gateway.io.h2_transport import FlowControlTimeout, H2Transport
from gateway.protocol.codec_h1 import ClientEvent
from gateway.protocol.codec_h2 import (
    CANCEL,
    REFUSED_STREAM,
    H2Codec,
    H2ConnectionError,
    H2Event,
    StreamGone,
)
from gateway.protocol.events import (
    NEED_DATA,
    ConnectionEnded,
    Data,
    EndStream,
    GoAway,
    PeerLimitsChanged,
    PingAcked,
    ResponseHeaders,
    StreamReset,
)
from gateway.protocol.headers import HeaderMap, RequestHead


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
        with _stream_errors():
            self._conn.codec.send_request_head(self.stream_id, head, end_stream=end_stream)
        self.request_done = end_stream
        await self._conn.transport.flush()

    async def send_request(
        self, head: RequestHead, body: bytes, trailers: HeaderMap | None
    ) -> None:
        conn = self._conn
        with _stream_errors():
            conn.codec.send_request_head(self.stream_id, head, end_stream=False)
            # The head leaves with the body's first frames (or all of it) in one write.
            await conn.transport.send_data(
                self.stream_id, body, not trailers, conn.config.pool_timeout
            )
        if trailers:
            await self.send_end(trailers)
        else:
            self.request_done = True

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
                self._conn.codec.send_trailers(self.stream_id, trailers)
            else:
                self._conn.codec.end_stream(self.stream_id)
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
            self._conn.codec.acknowledge(self.stream_id, size)
            await self._conn.transport.flush()

    def finish(self) -> bool:
        """Called when the borrower is done; True if the stream must be flushed (reset)."""
        conn = self._conn
        conn.streams.pop(self.stream_id, None)
        conn.codec.acknowledge(self.stream_id, self.uncredited)
        if self.request_done and self.response_done:
            return self.uncredited > 0
        conn.codec.reset(self.stream_id, CANCEL)
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
        self.codec = H2Codec(
            client_side=True,
            options=config.http2,
            scheme="https" if config.tls is not None else "http",
        )
        self.codec.initiate()  # the preface leaves with the first request
        self.transport = H2Transport(stream, self.codec, UpstreamReset)
        self.streams: dict[int, H2UpstreamStream] = {}
        self.draining = False
        self.closed = False
        self.idle_since = trio.current_time()
        self._ping_acked = trio.Event()

    def __repr__(self) -> str:
        return f"<H2UpstreamConnection {self.host} streams={len(self.streams)}>"

    @property
    def max_streams(self) -> int:
        peer = self.codec.peer_max_concurrent_streams
        return min(self.config.http2.max_concurrent_streams, peer)

    @property
    def available(self) -> bool:
        return not (self.closed or self.draining) and len(self.streams) < self.max_streams

    def open_stream(self) -> H2UpstreamStream:
        stream_id = self.codec.next_stream_id()
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
                        self._dispatch(self.codec.receive_data(data))
                        await transport.flush()
                except (H2ConnectionError, UpstreamReset):
                    pass
                nursery.cancel_scope.cancel()
        finally:
            self.close()

    def _dispatch(self, events: list[H2Event]) -> None:
        for event in events:
            if isinstance(event, Data):
                stream = self.streams.get(event.stream_id)
                if stream is None:
                    self.codec.acknowledge(event.stream_id, len(event.data))
                    continue
                stream.uncredited += len(event.data)
                stream.events_send.send_nowait(event)
            elif isinstance(event, ResponseHeaders):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.events_send.send_nowait(event)
                    if event.end_stream:
                        stream.peer_ended(None)
            elif isinstance(event, EndStream):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.peer_ended(event.trailers)
            elif isinstance(event, StreamReset):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.refused = event.error_code == REFUSED_STREAM
                    stream.events_send.close()  # the reader sees ConnectionEnded: UpstreamReset
            elif isinstance(event, PeerLimitsChanged):
                self.transport.window_changed()
                self._capacity_changed()
            elif isinstance(event, GoAway):
                self.draining = True
                for stream_id, s in list(self.streams.items()):
                    if stream_id > event.last_stream_id:  # never processed: a reset
                        s.refused = True
                        s.events_send.close()
                self._capacity_changed()
            elif isinstance(event, PingAcked):
                self._ping_acked.set()

    async def _keepalive(self) -> None:
        options = self.config.http2
        while True:
            await trio.sleep(options.keepalive_interval)
            if self.closed:
                return  # closed meanwhile (reaped, drained): the reader is ending too
            self._ping_acked = trio.Event()
            try:
                self.codec.ping(b"gateway!")
                await self.transport.flush()
            except (StreamGone, UpstreamReset):
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
        self.codec.release()
        self._capacity_changed()


@contextlib.contextmanager
def _stream_errors() -> Iterator[None]:
    """h2 errors on one stream (reset under us, window shut too long) are upstream resets."""
    try:
        yield
    except (StreamGone, FlowControlTimeout) as exc:
        raise UpstreamReset(f"upstream HTTP/2 stream failed: {exc!r}") from exc
