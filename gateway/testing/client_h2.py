"""A simulated client's HTTP/2 connection (`protocol = "http2"`, h2c prior knowledge):
the gateway's own sans-IO HTTP/2 codec in the client role, its requests multiplexed on
one connection, one reader task for all of them."""

import attrs
import trio

from gateway.config.model import Http2ProtocolOptions
from gateway.io.byte_stream import ByteStream
from gateway.io.trio_util import PEER_GONE, receive_or_eof
from gateway.protocol import grpc
from gateway.protocol.codec_h2 import H2Codec, H2ConnectionError, StreamGone
from gateway.protocol.events import Data, EndStream, GoAway, ResponseHeaders, StreamReset
from gateway.protocol.headers import HeaderMap, RequestHead
from gateway.testing.scenario import RequestSpec
from gateway.testing.upstream_host_h2 import GRPC_STREAM, stream_shape

#: RST_STREAM's CANCEL: what a client that gives up on a request sends.
_CANCEL = 8


@attrs.define(eq=False)
class _Pending:
    status: int | None = None
    #: A gRPC call's grpc-status, from its trailers (or a trailers-only response's head).
    grpc_status: str | None = None
    done: trio.Event = attrs.Factory(trio.Event)


class H2ClientConnection:
    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.codec = H2Codec(client_side=True, options=Http2ProtocolOptions(), scheme="http")
        self.codec.initiate()
        self._send_lock = trio.Lock()
        self._pending: dict[int, _Pending] = {}
        #: The gateway closed it, or sent GOAWAY: no new requests on it.
        self.closed = False

    @property
    def reusable(self) -> bool:
        return not self.closed

    def close(self) -> None:
        self.closed = True
        self.stream.close_now()

    async def run(self) -> None:
        """The reader: every stream's response, until the connection ends."""
        try:
            await self.flush()  # the preface
            while data := await receive_or_eof(self.stream):
                for event in self.codec.receive_data(data):
                    self._dispatch(event)
                await self.flush()
        except (*PEER_GONE, H2ConnectionError):
            pass
        finally:
            self.closed = True
            for pending in self._pending.values():
                pending.done.set()  # with no status: the connection ended first
            self.stream.close_now()

    def _dispatch(self, event: object) -> None:
        if isinstance(event, ResponseHeaders) and event.head.status >= 200:
            if (pending := self._pending.get(event.stream_id)) is not None:
                pending.status = event.head.status
                pending.grpc_status = event.head.headers.get("grpc-status")
            if event.end_stream:
                self._end(event.stream_id)
        elif isinstance(event, Data):
            self.codec.acknowledge(event.stream_id, len(event.data))
        elif isinstance(event, EndStream):
            pending = self._pending.get(event.stream_id)
            if pending is not None and event.trailers is not None:
                pending.grpc_status = event.trailers.get("grpc-status") or pending.grpc_status
            self._end(event.stream_id)
        elif isinstance(event, StreamReset):
            if (pending := self._pending.pop(event.stream_id, None)) is not None:
                pending.status = None
                pending.done.set()
        elif isinstance(event, GoAway):
            self.closed = True

    def _end(self, stream_id: int) -> None:
        if (pending := self._pending.pop(stream_id, None)) is not None:
            pending.done.set()

    async def flush(self) -> None:
        async with self._send_lock:
            if data := self.codec.data_to_send():
                await self.stream.send_all(data)

    async def exchange(
        self, spec: RequestSpec, tag: str, tag_header: str, deadline: float
    ) -> str | None:
        """One request on its own stream; its status ("200"), or for a gRPC call its
        grpc-status ("grpc-0"), or None if the stream was reset or the connection ended
        first. Cancelled at its `deadline`, it resets the stream, as
        a client that gives up does (cancelled before, by the run's end, it leaves it)."""
        stream_id = self.codec.next_stream_id()
        pending = self._pending[stream_id] = _Pending()
        headers = HeaderMap([(tag_header, tag), *spec.headers.items()])
        method, body = spec.method, b"x" * spec.body_size
        call = spec.grpc or spec.grpc_stream is not None
        if call:
            method, body = "POST", grpc.frame(body)
            headers.set("content-type", "application/grpc")
            headers.set("te", "trailers")
        if (shape := spec.grpc_stream) is not None:
            headers.set(GRPC_STREAM, stream_shape(shape.messages, shape.interval, shape.size))
        if body:
            headers.set("content-length", str(len(body)))
        head = RequestHead(method, spec.path, spec.authority, "http", headers, "2")
        try:
            self.codec.send_request_head(stream_id, head, end_stream=not body)
            if body:  # within the initial window: a scenario's bodies are small
                self.codec.send_data(stream_id, memoryview(body), end_stream=True)
            await self.flush()
            await pending.done.wait()
        except StreamGone:
            return None
        except trio.Cancelled:
            if trio.current_time() < deadline:
                raise
            self._pending.pop(stream_id, None)
            self.codec.reset(stream_id, _CANCEL)
            with trio.CancelScope(shield=True):
                try:
                    await self.flush()
                except PEER_GONE:
                    pass
            raise
        if pending.status is None:
            return None
        if not call:
            return str(pending.status)
        # No grpc-status: a gRPC client reads the HTTP status, as the gRPC spec says.
        code = pending.grpc_status or str(int(grpc.status_for_http(pending.status)))
        return f"grpc-{code}"
