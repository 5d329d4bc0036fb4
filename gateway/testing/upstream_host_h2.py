"""A simulated host's HTTP/2 side (a cluster with `protocol = "http2"`): the gateway's own
sans-IO HTTP/2 codec in the server role, each stream answered in a task of its own as the
host's script decides.

A "reset" host resets the stream mid-body (RST_STREAM) rather than the connection; a
"hang" host leaves the stream open; a host that went down closes the connection.
"""

from collections.abc import Callable

import trio

from gateway.config.model import Http2ProtocolOptions
from gateway.io.byte_stream import ByteStream
from gateway.io.trio_util import receive_or_eof
from gateway.protocol import grpc
from gateway.protocol.codec_h2 import H2Codec, H2ConnectionError, StreamGone
from gateway.protocol.events import (
    Data,
    EndStream,
    PeerLimitsChanged,
    RequestHeaders,
    StreamReset,
)
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead
from gateway.testing.behaviour import Answer
from gateway.testing.virtual_clock import sleep

#: RST_STREAM's INTERNAL_ERROR: what a server that fails mid-response sends.
_INTERNAL_ERROR = 2

#: The header by which a simulated client asks for a server-streaming answer to a gRPC
#: call: "MESSAGES INTERVAL SIZE" (a count, seconds, bytes).
GRPC_STREAM = "x-scenario-stream"


def stream_shape(messages: int, interval: float, size: int) -> str:
    """The `GRPC_STREAM` header's value."""
    return f"{messages} {interval!r} {size}"


def _parse_shape(value: str | None, unary_size: int) -> tuple[int, float, int]:
    """(messages, interval, size) a call asks for; one message for a unary call (or a
    header that does not parse)."""
    if value is not None:
        try:
            messages, interval, size = value.split()
            return int(messages), float(interval), int(size)
        except ValueError:
            pass
    return 1, 0.0, unary_size


class _Connection:
    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.codec = H2Codec(client_side=False, options=Http2ProtocolOptions(), scheme="http")
        self._send_lock = trio.Lock()
        #: Set (and replaced) when the peer opens a window: senders waiting for it look again.
        self.window_opened = trio.Event()

    async def flush(self) -> None:
        async with self._send_lock:
            if data := self.codec.data_to_send():
                await self.stream.send_all(data)

    async def send_body(self, stream_id: int, data: bytes, *, end_stream: bool) -> None:
        """Sends `data` as the windows let it go; StreamGone if the gateway reset it."""
        body = memoryview(data)
        while True:
            taken = self.codec.send_data(stream_id, body, end_stream=end_stream)
            body = body[taken:]
            await self.flush()
            if not body:
                return
            await self.window_opened.wait()


async def serve_h2(
    stream: ByteStream,
    first: bytes,
    decide: Callable[[RequestHead], Answer],
    served: Callable[[int], None],
) -> None:
    """Serves an HTTP/2 connection that began with `first` (the preface, at least)."""
    connection = _Connection(stream)
    codec = connection.codec
    codec.initiate()
    heads: dict[int, RequestHead] = {}
    try:
        async with trio.open_nursery() as nursery:

            def start(stream_id: int, head: RequestHead) -> None:
                nursery.start_soon(_answer, connection, stream_id, head, decide, served)

            data = first
            while data:
                try:
                    events = codec.receive_data(data)
                except H2ConnectionError:
                    break
                for event in events:
                    if isinstance(event, RequestHeaders):
                        if event.end_stream:
                            nursery.start_soon(
                                _answer, connection, event.stream_id, event.head, decide, served
                            )
                        else:
                            heads[event.stream_id] = event.head
                    elif isinstance(event, Data):
                        codec.acknowledge(event.stream_id, len(event.data))
                    elif isinstance(event, EndStream) and event.stream_id in heads:
                        head = heads.pop(event.stream_id)
                        nursery.start_soon(
                            _answer, connection, event.stream_id, head, decide, served
                        )
                    elif isinstance(event, StreamReset):
                        heads.pop(event.stream_id, None)
                    elif isinstance(event, PeerLimitsChanged):
                        connection.window_opened.set()
                        connection.window_opened = trio.Event()
                await connection.flush()
                data = await receive_or_eof(stream)
            nursery.cancel_scope.cancel()  # the gateway closed: answers in flight go
    finally:
        codec.release()


async def _answer(
    connection: _Connection,
    stream_id: int,
    head: RequestHead,
    decide: Callable[[RequestHead], Answer],
    served: Callable[[int], None],
) -> None:
    answer = decide(head)
    if answer.state == "hang":
        return  # the stream stays open until the gateway resets it or goes
    if answer.state == "down":
        connection.stream.close_now()
        return
    if answer.delay:
        await sleep(answer.delay)
    codec = connection.codec
    if grpc.is_grpc_request(head):
        shape = _parse_shape(head.headers.get(GRPC_STREAM), answer.body_size)
        if await _answer_grpc(connection, stream_id, answer, *shape):
            served(answer.status)
        return
    response = ResponseHead(answer.status, HeaderMap([("content-length", str(answer.body_size))]))
    try:
        if answer.state == "reset":
            codec.send_response_head(stream_id, response, end_stream=False)
            codec.send_data(stream_id, memoryview(b"x" * (answer.body_size // 2)), end_stream=False)
            codec.reset(stream_id, _INTERNAL_ERROR)
            await connection.flush()
            return
        codec.send_response_head(stream_id, response, end_stream=not answer.body_size)
        if answer.body_size:
            await connection.send_body(stream_id, b"x" * answer.body_size, end_stream=True)
        else:
            await connection.flush()
    except StreamGone:
        return  # the gateway reset the stream (its timeout, or its client left)
    served(answer.status)


async def _answer_grpc(
    connection: _Connection,
    stream_id: int,
    answer: Answer,
    messages: int,
    interval: float,
    size: int,
) -> bool:
    """A gRPC server's answer: HTTP 200, `messages` messages of `size` bytes `interval`
    apart (one for a unary call), and the script's status as the gRPC status it maps to
    (503: UNAVAILABLE, 504: DEADLINE_EXCEEDED, ...) in trailers; a "reset" host resets the
    stream after half of them and half of the next. True if it was answered whole."""
    codec = connection.codec
    message = grpc.frame(b"x" * size)
    head = ResponseHead(200, HeaderMap([("content-type", "application/grpc")]))
    whole = messages // 2 if answer.state == "reset" else messages
    try:
        codec.send_response_head(stream_id, head, end_stream=False)
        for sent in range(whole):
            if sent:
                await sleep(interval)
            await connection.send_body(stream_id, message, end_stream=False)
        if answer.state == "reset":
            if whole:
                await sleep(interval)
            await connection.send_body(stream_id, message[: len(message) // 2], end_stream=False)
            codec.reset(stream_id, _INTERNAL_ERROR)
            await connection.flush()
            return False
        status = int(grpc.status_for_http(answer.status))
        codec.send_trailers(stream_id, HeaderMap([("grpc-status", str(status))]))
        await connection.flush()
    except StreamGone:
        return False
    return True
