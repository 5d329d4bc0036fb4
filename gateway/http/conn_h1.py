"""The HTTP/1.1 side of the connection manager: one downstream connection, over h11.

Theory of operation
-------------------
`Http1Connection.run` is the connection's task. It reads request heads itself, under two
deadlines owned right here: the idle timeout (no request in flight, nothing received) and
the request-headers timeout, which starts at the first byte of a head (slowloris gets 408).

For each request it opens a nursery with two tasks:

* "stream N METHOD PATH" runs the ActiveStream: decode filters, router, encode filters.
* "downstream reader" is the only task that reads the socket while the stream lives. It
  feeds the request body into a channel of capacity 1 (backpressure reaches the client
  through TCP), then keeps reading to notice a client that goes away. EOF or a reset
  cancels the stream's scope at once; the cancellation reaches the upstream exchange
  wherever it waits, and the pool closes that upstream connection (flag DC). Bytes that
  arrive early (pipelined requests) are buffered in h11, bounded by the head size limit.

When the stream finishes, the reader is cancelled (trio's receive_some loses no data when
cancelled) and the loop parses the next request. All writes go through one lock, since
the 100-continue answer comes from the upload task while the stream task writes responses.
The connection is the stream's ResponseEncoder: HTTP/1.1 has one stream at a time.
"""

import contextlib
import http

import trio

from gateway.errors import DownstreamDisconnect, DownstreamProtocolError
from gateway.http.active_stream import ActiveStream, BodyItem, ResponseState
from gateway.http.codec_h1 import ServerCodec
from gateway.http.conn_manager import HttpConnectionManager
from gateway.http.events import NEED_DATA, ConnectionEnded, Data, EndStream, RequestHeaders
from gateway.http.headers import HeaderMap, ResponseHead
from gateway.http.stream_info import StreamInfo
from gateway.http.tunnel import SocketEndpoint
from gateway.listeners.network_filter import ConnectionInfo
from gateway.tasktree import preserve_annotation
from gateway.tls_stream import ByteStream
from gateway.trio_util import raise_single

RECEIVE_SIZE = 65536


class Http1Connection:
    def __init__(
        self,
        manager: HttpConnectionManager,
        stream: ByteStream,
        conn_info: ConnectionInfo,
        initial: bytes = b"",
    ) -> None:
        self.manager = manager
        self.conn_info = conn_info
        self.peer = conn_info.peer
        self._stream = stream
        cfg = manager.config
        self.codec = ServerCodec(
            max_header_bytes=cfg.max_request_headers_kb * 1024,
            max_header_count=cfg.max_request_headers_count,
            scheme=conn_info.scheme,
        )
        self._initial = initial
        self._send_lock = trio.StrictFIFOLock()
        self._pending = b""
        self._broken = False
        self._close_after_response = False
        self._idle_scope: trio.CancelScope | None = None
        self._stream_scope: trio.CancelScope | None = None
        self._active: ActiveStream | None = None
        self.requests = 0
        self.bytes_received = len(initial)
        self.bytes_sent = 0

    def __repr__(self) -> str:
        return f"<Http1Connection {self.peer} requests={self.requests} active={self._active!r}>"

    def task_fields(self) -> dict[str, object]:
        return {
            "protocol": "HTTP/1.1",
            "requests": self.requests,
            "state": "idle" if self._active is None else "active request",
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
        }

    # -- the connection loop -------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self._initial:
                self.codec.receive_data(self._initial)
            while True:
                event = await self._receive_request_head()
                if event is None:
                    return
                await self._serve(event)
                if self._broken or self._close_after_response or not self.codec.reusable:
                    return
                if self.manager.draining:
                    self.manager.stats.downstream_cx_drain_close.inc()
                    return
                self.codec.start_next_cycle()
        except DownstreamProtocolError as exc:
            self.manager.stats.downstream_cx_protocol_error.inc()
            await self._reply_and_close(exc.status, exc.body, "DPE")

    async def _receive(self) -> bytes:
        """Bytes from the client; b"" when it closed or reset the connection."""
        try:
            data = await self._stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return b""
        self.bytes_received += len(data)
        return data

    async def _receive_request_head(self) -> RequestHeaders | None:
        cfg = self.manager.config
        idle_deadline = trio.current_time() + cfg.idle_timeout
        head_deadline: float | None = None
        while True:
            event = self.codec.next_event()
            if isinstance(event, RequestHeaders):
                return event
            if event is not NEED_DATA:  # ConnectionEnded: the client closed between requests
                return None
            if head_deadline is None:
                if self.codec.has_partial_request:
                    head_deadline = trio.current_time() + cfg.request_headers_timeout
                elif self.manager.draining:
                    return None
            with trio.move_on_at(head_deadline or idle_deadline) as scope:
                self._idle_scope = scope if head_deadline is None else None
                data = await self._receive()
            self._idle_scope = None
            if scope.cancelled_caught:
                if head_deadline is not None:
                    self.manager.stats.downstream_rq_header_timeout.inc()
                    await self._reply_and_close(408, "request headers timeout", "-")
                elif not self.manager.draining:
                    self.manager.stats.downstream_cx_idle_timeout.inc()
                return None
            if not data:
                return None
            self.codec.receive_data(data)

    async def _serve(self, event: RequestHeaders) -> None:
        self.requests += 1
        body_send, body_recv = (None, None)
        if not event.end_stream:
            body_send, body_recv = trio.open_memory_channel[BodyItem](1)
        stream = self.manager.new_stream(self, event, self.conn_info, body_recv)
        self._active = stream
        try:
            if event.end_stream and event.head.upgrade:
                await self._run_upgrade_stream(stream)
            else:
                async with trio.open_nursery() as nursery:
                    self._stream_scope = nursery.cancel_scope
                    nursery.start_soon(self._read_downstream, body_send, name="downstream reader")
                    nursery.start_soon(self._run_stream, stream, name=stream.task_name)
        except BaseExceptionGroup as group:
            raise_single(group)
        finally:
            self._active = None
            self._stream_scope = None
            if stream.response_state is not ResponseState.DONE:
                self._broken = True
            self.manager.finish(stream.info)

    async def _run_upgrade_stream(self, stream: ActiveStream) -> None:
        """An upgrade may turn the socket into a tunnel whose pumps must be its only
        readers, so it gets no reader task; and as a long-lived idle tunnel is where memory
        per connection matters most, it runs in the connection's own task, not a child."""
        with trio.CancelScope() as scope, preserve_annotation():
            self._stream_scope = scope
            await self.manager.run_stream(stream)

    async def _run_stream(self, stream: ActiveStream) -> None:
        await self.manager.run_stream(stream)
        assert self._stream_scope is not None
        self._stream_scope.cancel()  # the exchange is over: stop the reader

    async def _read_downstream(self, body: trio.MemorySendChannel[BodyItem] | None) -> None:
        codec = self.codec
        if body is not None:
            with body:
                while True:
                    try:
                        event = codec.next_event()
                    except DownstreamProtocolError as exc:
                        self._close_after_response = True
                        await body.send(exc)
                        return
                    if isinstance(event, Data):
                        await body.send(event.data)
                    elif isinstance(event, EndStream):
                        if event.trailers is not None:
                            await body.send(event.trailers)
                        break
                    elif isinstance(event, ConnectionEnded) or not (data := await self._receive()):
                        self._client_gone()
                        return
                    else:
                        codec.receive_data(data)
        # The request is complete. Keep reading so a client that leaves is noticed at once;
        # early bytes of the next request wait in h11, up to the head size limit.
        limit = self.manager.config.max_request_headers_kb * 1024
        while codec.buffered_bytes < limit:
            data = await self._receive()
            if not data:
                self._client_gone()
                return
            codec.receive_data(data)
        await trio.sleep_forever()

    def _client_gone(self) -> None:
        self._broken = True
        active = self._active
        if active is None or active.response_state is ResponseState.DONE:
            return  # the client read its whole response, then left: nothing to abandon
        self.manager.stats.downstream_cx_destroy_remote_active_rq.inc()
        active.info.add_flag("DC")
        if self._stream_scope is not None:
            self._stream_scope.cancel()

    # -- ResponseEncoder -----------------------------------------------------------------

    async def continue_if_expected(self) -> None:
        """Answers `Expect: 100-continue` when the body is first wanted, as Envoy does."""
        if self.codec.waiting_for_100_continue:
            await self._write(self.codec.send_100_continue())

    async def encode_headers(self, head: ResponseHead, end_stream: bool, flush: bool) -> None:
        if self.manager.draining or self._close_after_response or not self.codec.request_complete:
            head.headers.set("connection", "close")
        assert self._active is not None
        data = self.codec.send_response_head(head, request_method=self._active.request.method)
        if end_stream:
            data += self.codec.send_end()
        if flush or end_stream:
            await self._write(data)
        else:
            self._pending = data

    async def encode_data(self, data: bytes, end_stream: bool) -> None:
        out = self._pending + (self.codec.send_data(data) if data else b"")
        self._pending = b""
        if end_stream:
            out += self.codec.send_end()
        if out:
            await self._write(out)

    async def encode_trailers(self, trailers: HeaderMap) -> None:
        out = self._pending + self.codec.send_end(trailers)
        self._pending = b""
        if self.codec.trailers_dropped:
            self.manager.stats.downstream_rs_trailers_dropped.inc()
            self.codec.trailers_dropped = 0
        await self._write(out)

    async def accept_upgrade(self, head: ResponseHead) -> SocketEndpoint:
        """Sends the upstream's 101; the socket then belongs to the tunnel."""
        await self._write(self.codec.send_switching_protocols(head))
        return SocketEndpoint(self._stream, self.codec.take_trailing_data())

    async def body_consumed(self, size: int) -> None:
        """HTTP/1.1 has no flow-control credit to give: TCP carries the backpressure."""

    async def _write(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
                self.bytes_sent += len(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                self._broken = True
                self.codec.send_failed()
                raise DownstreamDisconnect() from exc
            except BaseException:
                self._broken = True
                self.codec.send_failed()
                raise

    def abort(self) -> None:
        """Gives up on the connection after a failure mid-response (a truncated body)."""
        self._broken = True

    def close_after_response(self) -> None:
        self._close_after_response = True

    def drain(self) -> None:
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    async def _reply_and_close(self, status: int, body: str, flag: str) -> None:
        """Answers a request that never became a stream (bad or slow head), then closes."""
        self.manager.stats.downstream_rq_total.inc()
        info = StreamInfo(stream_id=self.codec.stream_id, downstream_remote=self.peer)
        info.response_code = status
        info.add_flag(flag)
        payload = body.encode()
        info.bytes_sent = len(payload)
        reason = http.HTTPStatus(status).phrase
        raw = (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\n"
            f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
        ).encode() + payload
        with (
            trio.move_on_after(1),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
        ):
            await self._stream.send_all(raw)
        self.manager.finish(info)
