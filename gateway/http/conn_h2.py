"""The HTTP/2 side of the connection manager: one downstream connection, over h2.

Theory of operation
-------------------
The connection's task is the only reader of the socket. It feeds h2 and dispatches the
events, synchronously, to per-stream state; it never waits on a stream. Each request
becomes a task in the connection's nursery ("stream 3 GET /api") running the same
ActiveStream, filters and router as HTTP/1.1, with an `H2StreamEncoder` as its
ResponseEncoder.

Memory is bounded by flow control, end to end. Request body chunks go into the stream's
channel as they arrive; the peer cannot send more than the window we granted, and we
credit bytes back (WINDOW_UPDATE) only when the router has forwarded them upstream. So a
slow upstream slows the client, and one stream holds at most `initial_stream_window_size`
bytes. Responses go out only as the client's window allows; the router reads the upstream
no faster than that, so a slow reader slows the upstream too.

A client RST_STREAM cancels that stream's task (the upstream exchange is reset or its
connection discarded on the way out), other streams carry on. More resets per second than
`max_stream_resets_per_second` is the 2023 rapid-reset attack: GOAWAY ENHANCE_YOUR_CALM and
close. h2 itself bounds CONTINUATION floods and header list size (GOAWAY and close).

Drain: a GOAWAY naming the last stream we accept goes out at once; new streams are refused
(REFUSED_STREAM, safe for clients to retry), open streams finish, then the connection closes.
"""

import contextlib
import logging
import math

import trio

from gateway.errors import DownstreamDisconnect
from gateway.http.active_stream import ActiveStream
from gateway.http.connection import ConnectionCallbacks
from gateway.http.multiplexed import StreamEncoder, StreamTable
from gateway.io.byte_stream import ByteStream
from gateway.io.h2_transport import FlowControlTimeout, H2Transport
from gateway.io.trio_util import raise_single
from gateway.listeners.network_filter import ConnectionInfo
from gateway.protocol.codec_h2 import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    MAX_STREAM_ID,
    REFUSED_STREAM,
    H2Codec,
    H2ConnectionError,
    H2Event,
    StreamGone,
)
from gateway.protocol.events import (
    Data,
    EndStream,
    GoAway,
    PeerLimitsChanged,
    RequestHeaders,
    StreamReset,
)
from gateway.protocol.h2_guard import FloodDetected
from gateway.protocol.headers import HeaderMap, ResponseHead

log = logging.getLogger("gateway.http")

#: What a send to a stream raises when the client reset it, sent GOAWAY and left (h2 then
#: refuses every send), or kept its window shut for too long: for this stream, it is gone.
#: (Caught inline, not by a context manager: these sends run once or twice per request.)
_STREAM_GONE = (StreamGone, FlowControlTimeout)


class H2StreamEncoder(StreamEncoder):
    """The ResponseEncoder of one HTTP/2 stream."""

    def __init__(self, conn: "Http2Connection", stream_id: int) -> None:
        super().__init__(stream_id)
        self._conn = conn

    async def encode_headers(self, head: ResponseHead, end_stream: bool, flush: bool) -> None:
        try:
            self._conn.codec.send_response_head(self.stream_id, head, end_stream=end_stream)
        except StreamGone as exc:
            raise DownstreamDisconnect(str(exc)) from exc
        if flush or end_stream:
            await self._conn.transport.flush()

    async def encode_data(self, data: bytes, end_stream: bool, flush: bool = True) -> None:
        try:
            await self._conn.transport.send_data(
                self.stream_id,
                data,
                end_stream,
                self._conn.callbacks.config.idle_timeout,
                flush=flush or end_stream,
            )
        except _STREAM_GONE as exc:
            raise DownstreamDisconnect(str(exc)) from exc

    async def encode_trailers(self, trailers: HeaderMap) -> None:
        try:
            self._conn.codec.send_trailers(self.stream_id, trailers)
        except StreamGone as exc:
            raise DownstreamDisconnect(str(exc)) from exc
        await self._conn.transport.flush()

    async def body_consumed(self, size: int) -> None:
        size = min(size, self.uncredited)
        self.uncredited -= size
        self._conn.codec.acknowledge(self.stream_id, size)
        await self._conn.transport.flush()


class Http2Connection:
    def __init__(
        self,
        callbacks: ConnectionCallbacks,
        stream: ByteStream,
        conn_info: ConnectionInfo,
        initial: bytes,
    ) -> None:
        self.callbacks = callbacks
        self.conn_info = conn_info
        self.peer = conn_info.peer
        self.codec = H2Codec(
            client_side=False, options=callbacks.config.http2, scheme=conn_info.scheme
        )
        self.transport = H2Transport(stream, self.codec, DownstreamDisconnect)
        self._initial = initial
        self._table: StreamTable[H2StreamEncoder] = StreamTable(
            callbacks, conn_info, self.codec.acknowledge
        )
        self._nursery: trio.Nursery | None = None
        self._read_scope: trio.CancelScope | None = None
        self._last_stream_id = 0
        self._goaway_sent = False
        self._draining = False
        #: Until when streams the client may have sent are still taken, once draining.
        self._grace_deadline = math.inf
        self._resets: list[float] = []
        self.requests = 0

    def __repr__(self) -> str:
        return f"<Http2Connection {self.peer} streams={len(self._table)}>"

    def task_fields(self) -> dict[str, object]:
        return {
            "protocol": "HTTP/2",
            "requests": self.requests,
            "open_streams": len(self._table),
            "state": "draining" if self._draining or self._goaway_sent else "open",
            "bytes_received": self.transport.bytes_received + len(self._initial),
            "bytes_sent": self.transport.bytes_sent,
        }

    # -- the connection task -------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._serve()
        finally:
            self.codec.release()

    async def _serve(self) -> None:
        transport = self.transport
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.codec.initiate()
                try:
                    if self._initial:
                        self._receive(self._initial)
                    await transport.flush()
                    await self._read_loop()
                    self._client_gone()
                except FloodDetected as exc:
                    self._flooded(exc)
                except H2ConnectionError:
                    # The codec has queued a GOAWAY with the right error code: send, close.
                    self.callbacks.stats.downstream_cx_protocol_error.inc()
                    await self._flush_quietly()
                except DownstreamDisconnect:
                    pass
                finally:
                    self._nursery = None  # closing: drain() must not start tasks in it
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise_single(group)
        if self.codec.closed:
            await self._flush_quietly()  # the GOAWAY of a flood found in a stream's task

    def _flooded(self, exc: FloodDetected) -> None:
        """The client crossed a limit of h2_guard: GOAWAY ENHANCE_YOUR_CALM, its streams
        cancelled, and the connection closes once the GOAWAY is written."""
        self.callbacks.stats.flood(exc.reason).inc()
        self.callbacks.stats.downstream_cx_protocol_error.inc()  # as Envoy counts a flood
        log.warning("HTTP/2 client %s closed: %s", self.peer, exc)
        # False when h2 closed it already (a limit h2 checks for us) and queued its GOAWAY.
        self.codec.close(ENHANCE_YOUR_CALM, exc.reason.encode())
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _read_loop(self) -> None:
        transport = self.transport
        idle_timeout = self.callbacks.config.idle_timeout
        while not transport.broken:
            if self._goaway_sent and not self._table:
                await self._close_gracefully()
                return
            # Idle (no streams) for idle_timeout closes the connection; drain() and the last
            # stream ending after a GOAWAY cancel this scope to get here at once.
            with trio.move_on_after(math.inf if self._table else idle_timeout) as scope:
                self._read_scope = scope
                data = await transport.receive()
            self._read_scope = None
            if scope.cancelled_caught:
                if not self._goaway_sent:
                    self.callbacks.stats.downstream_cx_idle_timeout.inc()
                    self._goaway_sent = True
                continue
            if not data:
                return
            self._receive(data)
            await transport.flush()
            self.codec.written()

    def _receive(self, data: bytes) -> None:
        self._dispatch(self.codec.receive_data(data))

    def _wake_reader_if_done(self) -> None:
        if self._goaway_sent and not self._table and self._read_scope is not None:
            self._read_scope.cancel()

    def _dispatch(self, events: list[H2Event]) -> None:
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
            elif isinstance(event, GoAway):
                self._goaway_sent = True  # the client is leaving: take no new streams

    def _start_stream(self, request: RequestHeaders) -> None:
        stream_id = request.stream_id
        if self._goaway_sent:
            self._refuse(stream_id)
            return
        if len(self._table) >= self.callbacks.config.http2.max_concurrent_streams:
            # Clients may open streams before they see our SETTINGS: refuse the extra ones,
            # which they may retry, rather than fail them all (h2_guard.StreamLimitSettings).
            self.callbacks.stats.http2.streams_refused.inc()
            self._refuse(stream_id)
            self.codec.stream_closed(reset=True, lifetime=0.0)
            return
        self._last_stream_id = max(self._last_stream_id, stream_id)
        self.requests += 1
        assert self._nursery is not None
        self._table.open(H2StreamEncoder(self, stream_id), request, self._nursery, self._run_stream)

    def _refuse(self, stream_id: int) -> None:
        self.codec.reset(stream_id, REFUSED_STREAM)

    def _on_reset(self, event: StreamReset) -> None:
        """A stream reset by the client, or by h2 for the client's protocol error on it
        (e.g. a WINDOW_UPDATE overflowing the stream's window): either way the client chose
        it, and either way it counts toward the rapid-reset limit ("MadeYouReset")."""
        s = self._table.streams.get(event.stream_id)
        if s is not None:
            self._table.reset_by_client(s)  # nothing more to send on it, whoever reset it
        now = trio.current_time()  # virtual in a `gateway test` scenario, too
        self._resets = [t for t in self._resets if now - t < 1.0] + [now]
        if len(self._resets) > self.callbacks.config.http2.max_stream_resets_per_second:
            raise FloodDetected("rapid_reset")

    def _client_gone(self) -> None:
        """The client closed the connection: abandon its open streams (flag DC)."""
        self._table.client_gone()

    async def _run_stream(self, encoder: H2StreamEncoder, active: ActiveStream) -> None:
        try:
            await self.callbacks.run_stream(active, encoder.scope)
        except Exception:
            # Whatever went wrong belongs to this stream; the connection's others go on.
            log.exception("stream %s on %s failed", encoder.stream_id, self.peer)
        finally:
            unfinished = self._table.close(encoder)
            if unfinished and not encoder.reset_by_peer:
                self.callbacks.stats.downstream_rq_tx_reset.inc()
                self.codec.reset(encoder.stream_id, CANCEL)
            try:
                self.codec.stream_closed(
                    reset=unfinished, lifetime=active.info.duration_ms() / 1000
                )
            except FloodDetected as exc:
                self._flooded(exc)
            # Credit what was received but never forwarded, so the connection window does
            # not shrink for the streams that remain.
            self.codec.acknowledge(encoder.stream_id, encoder.uncredited)
            self.callbacks.finish(active.info)
            await self._flush_quietly()
            if self.callbacks.disable_http_keepalive.active:
                self.disable_keepalive()
            self._wake_reader_if_done()

    async def _flush_quietly(self) -> None:
        with contextlib.suppress(DownstreamDisconnect):
            if self.transport.flush_now():
                return  # written at once (or nothing to write): no scopes needed
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(1),
            contextlib.suppress(DownstreamDisconnect),
        ):
            await self.transport.flush()

    # -- drain ---------------------------------------------------------------------------

    def drain(self) -> None:
        """Graceful shutdown as RFC 9113 6.8 describes it: a first GOAWAY with the highest
        stream id tells the client to open no more streams while the ones already on their
        way are still served; after the drain grace a final GOAWAY names the last stream
        taken, new streams are refused, and the connection closes once idle."""
        if self._draining:
            return
        self._draining = True
        self._grace_deadline = min(
            self.callbacks.drain_grace_deadline, trio.current_time() + self.callbacks.drain_grace
        )
        if self._nursery is not None:
            self._nursery.start_soon(self._shut_down_gracefully, name="goaway")

    def disable_keepalive(self) -> None:
        """The overload action disable_http_keepalive: this connection drains as in a
        shutdown (GOAWAY); its open streams finish. Envoy sends its GOAWAY before the
        response head; here it follows the response, since clients built on h2 (httpx)
        drop every frame after a GOAWAY (httpcore#1054)."""
        if not self._draining:
            self.callbacks.stats.downstream_cx_overload_disable_keepalive.inc()
            self.drain()

    async def _shut_down_gracefully(self) -> None:
        await self._send_goaway(MAX_STREAM_ID)
        await trio.sleep_until(self._grace_deadline)
        self._goaway_sent = True
        if self._table:
            await self._send_goaway(self._last_stream_id)
        self._wake_reader_if_done()  # idle: close now, with h2's own GOAWAY

    async def _send_goaway(self, last_stream_id: int) -> None:
        with contextlib.suppress(DownstreamDisconnect):
            await self.transport.flush(self.codec.goaway_frame(last_stream_id))

    async def _close_gracefully(self) -> None:
        if self.codec.close(last_stream_id=self._last_stream_id):
            await self._flush_quietly()
