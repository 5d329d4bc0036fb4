"""The HTTP/3 side of the connection manager: one QUIC connection from a client.

Theory of operation
-------------------
The connection's task is the only reader: it takes the datagrams the listener routed to
this connection (and the codec's timer), feeds the codec and dispatches the events,
synchronously, to per-stream state; it never waits on a stream. Each request becomes a
task in the connection's nursery ("stream 0 GET /api"), running the same ActiveStream,
filters and router as HTTP/1.1 and HTTP/2, with an `H3StreamEncoder` as its
ResponseEncoder. It is conn_h2.py's shape; what differs is below the codec.

Memory is bounded by flow control end to end, as for HTTP/2: the codec grants a client
window only for bytes the router forwarded (`acknowledge`), and a response is queued no
faster than the client acknowledges it (`QuicTransport.send_data`). QUIC's own
MAX_STREAMS caps the streams a client can open.

A client's RESET_STREAM or STOP_SENDING cancels that stream's task; more resets per
second than `quic.max_stream_resets_per_second` closes the connection with
H3_EXCESSIVE_LOAD. Drain: a GOAWAY that refuses nothing at once, then after the drain
grace one naming the first stream not taken (RFC 9114 5.2); open streams finish, then the
connection closes with H3_NO_ERROR.
"""

import logging
import math
from collections.abc import Callable

import trio

from gateway.config.model import QuicProtocolOptions
from gateway.errors import DownstreamDisconnect
from gateway.http.active_stream import ActiveStream
from gateway.http.connection import ConnectionCallbacks
from gateway.http.multiplexed import StreamEncoder, StreamTable
from gateway.io.quic_transport import QuicTransport, SendTimeout
from gateway.listeners.network_filter import ConnectionInfo
from gateway.protocol.codec_h3 import (
    H3_EXCESSIVE_LOAD,
    H3_NO_ERROR,
    H3_REQUEST_CANCELLED,
    H3_REQUEST_REJECTED,
    ConnectionClosed,
    ConnectionIdsChanged,
    H3Codec,
    H3Event,
    HandshakeDone,
    StreamGone,
)
from gateway.protocol.events import (
    Data,
    EndStream,
    PeerLimitsChanged,
    RequestHeaders,
    StreamReset,
)
from gateway.protocol.headers import HeaderMap, ResponseHead

log = logging.getLogger("gateway.http")

#: A GOAWAY id above any stream a client can open: "no new streams", refusing none yet.
_GOAWAY_ALL = (1 << 62) - 4
#: How long a closing connection may take to say goodbye (CONNECTION_CLOSE, and QUIC's
#: closing period, which aioquic ends after three probe timeouts).
_CLOSE_GRACE = 3.0
_STREAM_GONE = (StreamGone, SendTimeout)


class H3StreamEncoder(StreamEncoder):
    """The ResponseEncoder of one HTTP/3 request stream."""

    def __init__(self, conn: "Http3Connection", stream_id: int) -> None:
        super().__init__(stream_id)
        self._conn = conn

    async def encode_headers(self, head: ResponseHead, end_stream: bool, flush: bool) -> None:
        try:
            self._conn.codec.send_response_head(self.stream_id, head, end_stream=end_stream)
        except StreamGone as exc:
            raise DownstreamDisconnect(str(exc)) from exc
        if flush or end_stream:
            self._conn.transport.flush()

    async def encode_data(self, data: bytes, end_stream: bool, flush: bool = True) -> None:
        conn = self._conn
        try:
            await conn.transport.send_data(
                self.stream_id,
                data,
                end_stream,
                conn.callbacks.config.idle_timeout,
                flush=flush or end_stream,
            )
        except _STREAM_GONE as exc:
            raise DownstreamDisconnect(str(exc)) from exc

    async def encode_trailers(self, trailers: HeaderMap) -> None:
        try:
            self._conn.codec.send_trailers(self.stream_id, trailers)
        except StreamGone as exc:
            raise DownstreamDisconnect(str(exc)) from exc
        self._conn.transport.flush()

    async def body_consumed(self, size: int) -> None:
        size = min(size, self.uncredited)
        self.uncredited -= size
        self._conn.codec.acknowledge(self.stream_id, size)
        self._conn.transport.flush()  # the window update, if the credit earned one


class Http3Connection:
    def __init__(
        self,
        callbacks: ConnectionCallbacks,
        codec: H3Codec,
        transport: QuicTransport[H3Event],
        conn_info: ConnectionInfo,
        options: QuicProtocolOptions,
        *,
        routes: Callable[[ConnectionIdsChanged], None],
    ) -> None:
        self.callbacks = callbacks
        self.codec = codec
        self.transport = transport
        self.conn_info = conn_info
        self.peer = conn_info.peer
        self._options = options
        #: Tells the listener which connection ids now route to this connection.
        self._routes = routes
        self._table: StreamTable[H3StreamEncoder] = StreamTable(
            callbacks, conn_info, codec.acknowledge
        )
        self._nursery: trio.Nursery | None = None
        self._goaway_sent = False
        self._draining = False
        self._grace_deadline = math.inf
        self._resets: list[float] = []
        #: Why the connection ended, once it did (for the listener's close-reason stats).
        self.closed: ConnectionClosed | None = None
        self.requests = 0

    def __repr__(self) -> str:
        return f"<Http3Connection {self.peer} streams={len(self._table)}>"

    def task_fields(self) -> dict[str, object]:
        return {
            "protocol": "HTTP/3",
            "requests": self.requests,
            "open_streams": len(self._table),
            "state": "draining" if self._draining or self._goaway_sent else "open",
            "bytes_received": self.transport.bytes_received,
            "bytes_sent": self.transport.bytes_sent,
        }

    # -- the connection task -------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self.transport.run_flusher, name="quic flusher")
                try:
                    await self._read_loop()
                finally:
                    self._nursery = None
                    self._table.client_gone()
                    nursery.cancel_scope.cancel()
            if not self.codec.ended:
                await self._say_goodbye()
        finally:
            self.codec.release()

    async def _read_loop(self) -> None:
        codec, transport = self.codec, self.transport
        idle_timeout = self.callbacks.config.idle_timeout
        handshake_deadline = trio.current_time() + self._options.handshake_timeout
        while self.closed is None:
            if not codec.handshake_complete:
                until = handshake_deadline
            elif self._table:
                until = math.inf
            else:
                # Idle (no streams) for idle_timeout closes the connection; drain() and
                # the last stream ending after a GOAWAY wake this at once.
                until = trio.current_time() + (0 if self._goaway_sent else idle_timeout)
            events = await transport.receive(until)
            if transport.inbox_closed:
                return
            if events:
                self._dispatch(events)
                transport.flush()
            elif trio.current_time() >= until:
                self._end_quietly(handshake_deadline)
                return

    def _end_quietly(self, handshake_deadline: float) -> None:
        """No handshake in time, idle, or drained: close (H3_NO_ERROR)."""
        if not self.codec.handshake_complete:
            log.debug("QUIC client %s: no handshake by %s", self.peer, handshake_deadline)
        elif not self._goaway_sent:
            self.callbacks.stats.downstream_cx_idle_timeout.inc()
        self.codec.close(H3_NO_ERROR)

    async def _say_goodbye(self) -> None:
        """Sends the CONNECTION_CLOSE and stays through QUIC's closing period, so a client
        that did not hear it is told again, then ends."""
        self.codec.close(H3_NO_ERROR)
        self.transport.flush()
        # Shielded from the connection's cancellation (a drain deadline), bounded by its own.
        with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_GRACE):
            while not self.codec.ended and not self.transport.inbox_closed:
                await self.transport.receive()
                self.transport.flush()

    def _dispatch(self, events: list[H3Event]) -> None:
        for event in events:
            if isinstance(event, Data):
                self._table.data(event)
            elif isinstance(event, RequestHeaders):
                self._start_stream(event)
            elif isinstance(event, EndStream):
                self._table.end(event)
            elif isinstance(event, StreamReset):
                self._on_reset(event)
            elif isinstance(event, PeerLimitsChanged):
                self.transport.window_changed()
            elif isinstance(event, ConnectionClosed):
                self.closed = event
            elif isinstance(event, ConnectionIdsChanged):
                self._routes(event)
            elif isinstance(event, HandshakeDone):
                http3 = self.callbacks.stats.http3
                v2 = event.version == 2
                (http3.quic_version_rfc_v2 if v2 else http3.quic_version_rfc_v1).inc()

    def _start_stream(self, request: RequestHeaders) -> None:
        stream_id = request.stream_id
        if self._goaway_sent:
            self.codec.reset(stream_id, H3_REQUEST_REJECTED)  # the client may retry it
            return
        self.requests += 1
        assert self._nursery is not None
        self._table.open(H3StreamEncoder(self, stream_id), request, self._nursery, self._run_stream)

    def _on_reset(self, event: StreamReset) -> None:
        """The client reset the stream or stopped its response (a client that leaves
        usually does both: one reset, counted once)."""
        s = self._table.streams.get(event.stream_id)
        if (s is not None and s.reset_by_peer) or self.codec.closing:
            return  # counted already, or the connection is closing anyway
        if s is not None:
            self.callbacks.stats.http3.rx_reset.inc()
            self._table.reset_by_client(s)
        now = trio.current_time()
        self._resets = [t for t in self._resets if now - t < 1.0] + [now]
        if len(self._resets) > self._options.max_stream_resets_per_second:
            self.callbacks.stats.downstream_cx_rapid_reset.inc()
            log.warning("HTTP/3 client %s closed: rapid reset", self.peer)
            self.codec.close(H3_EXCESSIVE_LOAD, "too many stream resets")

    async def _run_stream(self, encoder: H3StreamEncoder, active: ActiveStream) -> None:
        try:
            await self.callbacks.run_stream(active, encoder.scope)
        except Exception:
            # Whatever went wrong belongs to this stream; the connection's others go on.
            log.exception("stream %s on %s failed", encoder.stream_id, self.peer)
        finally:
            if self._table.close(encoder):  # the response was left unfinished
                # Our side too when the client reset its own: QUIC streams close each way
                # on its own, and a stream half open would hold one of the client's
                # MAX_STREAMS for the life of the connection.
                if not encoder.reset_by_peer:
                    self.callbacks.stats.downstream_rq_tx_reset.inc()
                    self.callbacks.stats.http3.tx_reset.inc()
                self.codec.reset(encoder.stream_id, H3_REQUEST_CANCELLED)
            elif encoder.body is not None:
                # Answered before the request ended: the rest of it is not wanted
                # (RFC 9114 4.1.1), and the stream can close.
                self.codec.stop_receiving(encoder.stream_id)
            self.codec.stream_closed(encoder.stream_id)
            self.callbacks.finish(active.info)
            self.transport.flush()
            if self.callbacks.disable_http_keepalive.active:
                self.disable_keepalive()
            self._wake_reader_if_done()

    def _wake_reader_if_done(self) -> None:
        if self._goaway_sent and not self._table:
            self.transport.wake()

    # -- drain ---------------------------------------------------------------------------

    def drain(self) -> None:
        """RFC 9114 5.2: a first GOAWAY refuses nothing but tells the client to open no
        more streams; after the drain grace a second names the first stream not taken,
        new streams are refused (H3_REQUEST_REJECTED, safe to retry), and the connection
        closes once its streams are done."""
        if self._draining:
            return
        self._draining = True
        self._grace_deadline = min(
            self.callbacks.drain_grace_deadline, trio.current_time() + self.callbacks.drain_grace
        )
        self.codec.goaway(_GOAWAY_ALL)
        self.transport.flush()
        if self._nursery is not None:
            self._nursery.start_soon(self._shut_down_gracefully, name="goaway")

    def disable_keepalive(self) -> None:
        """The overload action disable_http_keepalive: drain as in a shutdown."""
        if not self._draining:
            self.callbacks.stats.downstream_cx_overload_disable_keepalive.inc()
            self.drain()

    async def _shut_down_gracefully(self) -> None:
        await trio.sleep_until(self._grace_deadline)
        self._goaway_sent = True
        self.codec.goaway(self.codec.next_request_stream_id())
        self.transport.flush()
        self._wake_reader_if_done()
