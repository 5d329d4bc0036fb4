"""One unary gRPC exchange on an HTTP/2 upstream stream: the head and the one framed message
leave with END_STREAM in one write, and the answer is read whole: a head, one message and
trailers, or a trailers-only head. Anything but one message under OK is a `GrpcCallFailed`
naming the gRPC status. Used by `grpc_client.py` (a service cluster's pooled streams) and
the gRPC health check (a connection of its own).
"""

from urllib.parse import unquote

from gateway.clusters.upstream import UpstreamStream
from gateway.errors import GatewayError, UpstreamReset
from gateway.protocol import grpc
from gateway.protocol.events import Data, EndStream, ResponseHeaders
from gateway.protocol.headers import HeaderMap, RequestHead

#: A message's length prefix (gRPC's Length-Prefixed-Message), measured, not restated.
_PREFIX_SIZE = len(grpc.frame(b""))


class GrpcCallFailed(GatewayError):
    """A call that gave no answer: the gRPC status it ended with (UNAVAILABLE when the
    transport failed) and why."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"gRPC status {code}: {message}")
        self.code = code
        self.message = message


async def exchange_unary(
    stream: UpstreamStream, head: RequestHead, message: bytes, max_message: int
) -> bytes:
    """Sends a unary call (`head` and one message) on an HTTP/2 `stream` and returns the
    answer's message. GrpcCallFailed unless the call ended OK with one message of at most
    `max_message` bytes; UpstreamReset if the stream broke."""
    await stream.send_request(head, grpc.frame(message), None)
    status, body = 0, b""
    fields: HeaderMap | None = None
    while True:
        event = await stream.receive_event()
        if isinstance(event, ResponseHeaders):
            status, fields = event.head.status, event.head.headers
        elif isinstance(event, Data):
            body += event.data
            if len(body) > _PREFIX_SIZE + max_message:
                raise GrpcCallFailed(
                    grpc.Status.RESOURCE_EXHAUSTED, f"an answer over {max_message} bytes"
                )
        elif isinstance(event, EndStream):
            # A trailers-only answer ended with its head, where its status is.
            fields = event.trailers if event.trailers is not None else fields
            break
        else:
            raise UpstreamReset("the service ended the stream before answering")
    if status != 200 or fields is None:
        raise GrpcCallFailed(grpc.status_for_http(status), f"HTTP status {status}")
    code, text = call_status(fields)
    if code != grpc.Status.OK:
        raise GrpcCallFailed(code, text)
    try:
        messages, rest = grpc.split_messages(body, max_message)
    except ValueError as exc:
        raise GrpcCallFailed(grpc.Status.INTERNAL, str(exc)) from exc
    if len(messages) != 1 or rest:
        raise GrpcCallFailed(grpc.Status.INTERNAL, f"{len(messages)} messages in a unary answer")
    return messages[0]


def call_status(fields: HeaderMap) -> tuple[int, str]:
    """The status a call ended with (grpc-status, and grpc-message percent-decoded);
    UNKNOWN when the status is missing or not a number."""
    value = fields.get("grpc-status") or ""
    code = int(value) if value.isdigit() and len(value) <= 2 else grpc.Status.UNKNOWN
    return code, unquote(fields.get("grpc-message") or "")
