"""The HTTP/1.1 side of the connection manager: one downstream connection.

Theory of operation
-------------------
`Http1Connection.run` is the connection's task. It reads request heads itself, under two
deadlines owned right here: the idle timeout (no request in flight, nothing received) and
the request-headers timeout, which starts at the first byte of a head (slowloris gets 408).

The connection task owns a nursery for its whole life. For each request it starts one task,
"stream N METHOD PATH", which runs the ActiveStream (decode filters, router, encode
filters), and then itself becomes the downstream reader, the only task that reads the
socket while the stream lives. It feeds the request body into a channel of capacity 1
(backpressure reaches the client through TCP), then keeps reading to notice a client that
goes away. EOF or a reset cancels the stream's scope at once; the cancellation reaches the
upstream exchange wherever it waits, and the pool closes that upstream connection (flag
DC). Bytes that arrive early (pipelined requests) are parsed and queued by the codec,
bounded by the head size limit.

When the stream finishes it does not interrupt that read if the connection lives on: it
only puts the idle timeout on it, so the next request's bytes arrive in the read that is
already waiting, with no cancellation and no new task per request beyond the stream's. If
the connection must close (or the request body was not read to its end), the stream cancels
the read instead. All writes go through one lock, since the 100-continue answer comes from
the upload task while the stream task writes responses. The connection is the stream's
ResponseEncoder: HTTP/1.1 has one stream at a time.
"""

import contextlib
import http

import trio

from gateway.errors import DownstreamDisconnect, DownstreamProtocolError
from gateway.http.active_stream import ActiveStream, BodyItem, ResponseState
from gateway.http.connection import ConnectionCallbacks
from gateway.io.byte_stream import ByteStream
from gateway.io.fast_io import Receiver
from gateway.io.trio_util import PEER_GONE, raise_single
from gateway.io.tunnel import SocketEndpoint
from gateway.listeners.network_filter import ConnectionInfo
from gateway.observability.stream_info import StreamInfo
from gateway.observability.tasktree import preserve_annotation
from gateway.protocol.codec_h1_server import ServerCodec
from gateway.protocol.events import NEED_DATA, ConnectionEnded, Data, EndStream, RequestHeaders
from gateway.protocol.headers import HeaderMap, ResponseHead


class Http1Connection:
    def __init__(
        self,
        callbacks: ConnectionCallbacks,
        stream: ByteStream,
        conn_info: ConnectionInfo,
        initial: bytes = b"",
    ) -> None:
        self.callbacks = callbacks
        self.conn_info = conn_info
        self.peer = conn_info.peer
        self._stream = stream
        cfg = callbacks.config
        self.codec = ServerCodec(
            max_header_bytes=cfg.max_request_headers_kb * 1024,
            max_header_count=cfg.max_request_headers_count,
            scheme=conn_info.scheme,
            parser=cfg.http1_parser,
        )
        self._initial = initial
        self._send_lock = trio.StrictFIFOLock()
        self._pending = b""
        self._broken = False
        self._close_after_response = False
        self._idle_scope: trio.CancelScope | None = None
        #: When the idle timeout for the next request ends (set as a stream ends).
        self._idle_deadline: float | None = None
        self._nursery: trio.Nursery | None = None
        self._stream_scope: trio.CancelScope | None = None
        self._read_scope: trio.CancelScope | None = None
        self._stream_done = trio.Event()
        self._active: ActiveStream | None = None
        self.requests = 0
        self.bytes_received = len(initial)
        self._receiver = Receiver(stream)
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
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._serve_requests()
                except DownstreamProtocolError as exc:
                    self.callbacks.stats.downstream_cx_protocol_error.inc()
                    await self._reply_and_close(exc.status, exc.body, "DPE")
        except BaseExceptionGroup as group:
            raise_single(group)
        finally:
            self.codec.close()

    async def _serve_requests(self) -> None:
        if self._initial:
            self.codec.receive_data(self._initial)
        while True:
            event = await self._receive_request_head()
            if event is None:
                return
            await self._serve(event)
            if self._broken or self._close_after_response or not self.codec.reusable:
                if self.callbacks.draining:
                    self.callbacks.stats.downstream_cx_drain_close.inc()
                return
            # Draining may have begun after this response's head left without `connection:
            # close`: the client may reuse the connection at once, so a next request is
            # still served (and told to close) within the drain grace.
            self.codec.start_next_cycle()

    async def _receive(self) -> bytes:
        """Bytes from the client; b"" when it closed or reset the connection."""
        data = await self._receiver.receive_or_eof()
        self.bytes_received += len(data)
        return data

    async def _receive_request_head(self) -> RequestHeaders | None:
        cfg = self.callbacks.config
        # The idle timeout started when the previous stream ended (or starts now).
        idle_deadline = self._idle_deadline or trio.current_time() + cfg.idle_timeout
        self._idle_deadline = None
        head_deadline: float | None = None
        while True:
            event = self.codec.next_event()
            if isinstance(event, RequestHeaders):
                return event
            if event is not NEED_DATA:  # ConnectionEnded: the client closed between requests
                return None
            if head_deadline is None and self.codec.has_partial_request:
                head_deadline = trio.current_time() + cfg.request_headers_timeout
            # Draining, an idle connection waits out the drain grace for a request that
            # may already be on its way, rather than reset it by closing under it.
            deadline = head_deadline or min(idle_deadline, self.callbacks.drain_grace_deadline)
            with trio.move_on_at(deadline) as scope:
                self._idle_scope = scope if head_deadline is None else None
                data = await self._receive()
            self._idle_scope = None
            if scope.cancelled_caught:
                if head_deadline is not None:
                    self.callbacks.stats.downstream_rq_header_timeout.inc()
                    await self._reply_and_close(408, "request headers timeout", "-")
                elif self.callbacks.draining:
                    self.callbacks.stats.downstream_cx_drain_close.inc()
                else:
                    self.callbacks.stats.downstream_cx_idle_timeout.inc()
                return None
            if not data:
                return None
            self.codec.receive_data(data)

    async def _serve(self, event: RequestHeaders) -> None:
        """Runs one request; returns once its stream is over."""
        self.requests += 1
        body_send, body_recv = (None, None)
        if not event.end_stream:
            body_send, body_recv = trio.open_memory_channel[BodyItem](1)
        stream = self.callbacks.new_stream(self, event, self.conn_info, body_recv)
        self._active = stream
        if event.end_stream and (event.head.upgrade or event.head.method == "CONNECT"):
            try:
                await self._run_upgrade_stream(stream)
            finally:
                self._stream_over(stream)
            return
        done = self._stream_done = trio.Event()
        self._stream_scope = trio.CancelScope()
        read = self._read_scope = trio.CancelScope()
        assert self._nursery is not None
        self._nursery.start_soon(self._run_stream, stream, name=stream.task_name)
        try:
            with read:
                await self._read_downstream(body_send)
        finally:
            self._read_scope = None
            self._idle_scope = None
        if not done.is_set():  # (Event.wait yields even when set: a scheduler round saved)
            await done.wait()

    async def _run_upgrade_stream(self, stream: ActiveStream) -> None:
        """An upgrade may turn the socket into a tunnel whose pumps must be its only
        readers, so it gets no reader; and as a long-lived idle tunnel is where memory
        per connection matters most, it runs in the connection's own task, not a child."""
        scope = self._stream_scope = trio.CancelScope()
        with preserve_annotation():
            await self.callbacks.run_stream(stream, scope)

    async def _run_stream(self, stream: ActiveStream) -> None:
        try:
            assert self._stream_scope is not None
            await self.callbacks.run_stream(stream, self._stream_scope)
        finally:
            self._stream_over(stream)
            self._stream_done.set()
            if (read := self._read_scope) is not None:
                if self._connection_continues() and not self.codec.buffered_bytes:
                    # Leave the read waiting for the next request, now under the idle timeout.
                    self._idle_deadline = read.deadline = min(
                        trio.current_time() + self.callbacks.config.idle_timeout,
                        self.callbacks.drain_grace_deadline,
                    )
                    self._idle_scope = read
                else:
                    # The connection closes, or a pipelined request is already here: stop
                    # reading, the connection loop takes over.
                    read.cancel()

    def _stream_over(self, stream: ActiveStream) -> None:
        self._active = None
        self._stream_scope = None
        if stream.response_state is not ResponseState.DONE:
            self._broken = True
        self.callbacks.finish(stream.info)

    def _connection_continues(self) -> bool:
        return not (self._broken or self._close_after_response or not self.codec.reusable)

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
        # early bytes of the next request wait in the codec, up to the head size limit. Once the
        # stream is over, the first bytes of the next request end this.
        limit = self.callbacks.config.max_request_headers_kb * 1024
        done = self._stream_done
        while not done.is_set():
            if codec.buffered_bytes >= limit:
                await done.wait()
                return
            data = await self._receive()
            if not data:
                self._client_gone()
                return
            codec.receive_data(data)

    def _client_gone(self) -> None:
        self._broken = True
        active = self._active
        if active is None or active.response_state is ResponseState.DONE:
            return  # the client read its whole response, then left: nothing to abandon
        self.callbacks.stats.downstream_cx_destroy_remote_active_rq.inc()
        active.info.add_flag("DC")
        if self._stream_scope is not None:
            self._stream_scope.cancel()

    # -- ResponseEncoder -----------------------------------------------------------------

    async def continue_if_expected(self) -> None:
        """Answers `Expect: 100-continue` when the body is first wanted, as Envoy does."""
        if self.codec.waiting_for_100_continue:
            await self._write(self.codec.send_100_continue())

    async def encode_headers(self, head: ResponseHead, end_stream: bool, flush: bool) -> None:
        callbacks = self.callbacks
        if callbacks.draining or self._close_after_response or not self.codec.request_complete:
            head.headers.set("connection", "close")
        elif callbacks.disable_http_keepalive.active:
            callbacks.stats.downstream_cx_overload_disable_keepalive.inc()
            head.headers.set("connection", "close")
        assert self._active is not None
        data = self.codec.send_response_head(head, request_method=self._active.request.method)
        if end_stream:
            data += self.codec.send_end()
        if flush or end_stream:
            await self._write(data)
        else:
            self._pending = data

    async def encode_data(self, data: bytes, end_stream: bool, flush: bool = True) -> None:
        out = self._pending + (self.codec.send_data(data) if data else b"")
        self._pending = b""
        if end_stream:
            out += self.codec.send_end()
        if not (flush or end_stream):
            self._pending = out
        elif out:
            await self._write(out)

    async def encode_trailers(self, trailers: HeaderMap) -> None:
        out = self._pending + self.codec.send_end(trailers)
        self._pending = b""
        if self.codec.trailers_dropped:
            self.callbacks.stats.downstream_rs_trailers_dropped.inc()
            self.codec.trailers_dropped = 0
        await self._write(out)

    async def accept_upgrade(self, head: ResponseHead) -> SocketEndpoint:
        """Sends the upstream's 101; the socket then belongs to the tunnel."""
        await self._write(self.codec.send_switching_protocols(head))
        return SocketEndpoint(self._stream, self.codec.take_trailing_data())

    async def body_consumed(self, size: int) -> None:
        """HTTP/1.1 has no flow-control credit to give: TCP carries the backpressure."""

    async def _write(self, data: bytes) -> None:
        lock = self._send_lock
        try:
            if not lock.locked():  # nobody mid-write: try it at once (gateway/io/fast_io.py)
                sent = self._stream.send_now(data)
                self.bytes_sent += sent
                if sent == len(data):
                    return
                data = data[sent:]
            async with lock:
                await self._stream.send_all(data)
                self.bytes_sent += len(data)
        except PEER_GONE as exc:
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
            self._idle_scope.deadline = min(
                self._idle_scope.deadline, self.callbacks.drain_grace_deadline
            )

    async def _reply_and_close(self, status: int, body: str, flag: str) -> None:
        """Answers a request that never became a stream (bad or slow head), then closes."""
        self.callbacks.stats.downstream_rq_total.inc()
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
            contextlib.suppress(*PEER_GONE),
        ):
            await self._stream.send_all(raw)
        self.callbacks.finish(info)
