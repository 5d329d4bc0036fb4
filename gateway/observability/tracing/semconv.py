"""OpenTelemetry's semantic conventions for HTTP and RPC spans, as the gateway fills them in.

Attributes follow the stable HTTP conventions (`http.request.method`, `url.path`,
`server.address`, `network.protocol.version`, `http.response.status_code`, `error.type`)
and, for gRPC calls, the RPC ones (`rpc.system`, `rpc.service`, `rpc.method`,
`rpc.grpc.status_code`). URLs are written without their query string: queries often carry
tokens, and /tasks hides them too. Names: a gRPC span is named `service/method`, an HTTP
span by its method alone, as the conventions ask when no route template is known (a
route's prefix is not one).

Status, as the conventions say: a SERVER span fails on a 5xx (a 4xx is the client's
doing), a CLIENT span on a 4xx or 5xx; for gRPC, a CLIENT span on any status but OK, a
SERVER span on UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and
DATA_LOSS, the statuses that say the server failed. The gateway's own attributes are under
`gateway.` (route, cluster, response flags, the reason for a retry).
"""

from gateway.observability.tracing.span import AttributeValue, Span, SpanKind
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead

#: gRPC statuses that fail a SERVER span (the rest are the client's doing).
_GRPC_SERVER_ERRORS = frozenset({2, 4, 12, 13, 14, 15})


def grpc_method(path: str) -> tuple[str, str] | None:
    """`/package.Service/Method` as (service, method); None for anything else."""
    service, _, method = path.partition("?")[0][1:].partition("/")
    return (service, method) if service and method and "/" not in method else None


def span_name(head: RequestHead, grpc_call: bool) -> str:
    if grpc_call and (names := grpc_method(head.path)) is not None:
        return f"{names[0]}/{names[1]}"
    return head.method


def _host_port(authority: str) -> tuple[str, int | None]:
    """("example.com", 8080) from "example.com:8080"; IPv6 in brackets, port optional."""
    host, colon, port = authority.rpartition(":")
    if colon and port.isdigit() and (not host.startswith("[") or host.endswith("]")):
        return host.strip("[]"), int(port)
    return authority.strip("[]"), None


def request_attributes(head: RequestHead, grpc_call: bool) -> dict[str, AttributeValue]:
    """What a SERVER span says of the request it serves."""
    attributes: dict[str, AttributeValue] = {
        "http.request.method": head.method,
        "url.path": head.path_only,
        "url.scheme": head.scheme,
        "network.protocol.version": head.http_version,
    }
    _server(attributes, head.authority)
    if grpc_call:
        _rpc(attributes, head.path)
    return attributes


def upstream_attributes(
    head: RequestHead, host: str, protocol_version: str, grpc_call: bool
) -> dict[str, AttributeValue]:
    """What a CLIENT span says of a request sent to `host` ("10.0.0.1:8080")."""
    attributes: dict[str, AttributeValue] = {
        "http.request.method": head.method,
        "url.full": f"{head.scheme}://{head.authority}{head.path_only}",
        "network.protocol.version": protocol_version,
    }
    _server(attributes, host)
    if grpc_call:
        _rpc(attributes, head.path)
    return attributes


def _server(attributes: dict[str, AttributeValue], authority: str) -> None:
    host, port = _host_port(authority)
    if host:
        attributes["server.address"] = host
    if port is not None:
        attributes["server.port"] = port


def _rpc(attributes: dict[str, AttributeValue], path: str) -> None:
    attributes["rpc.system"] = "grpc"
    if (names := grpc_method(path)) is not None:
        attributes["rpc.service"], attributes["rpc.method"] = names


def grpc_status(head: ResponseHead | None, trailers: HeaderMap | None) -> int | None:
    """The grpc-status of a response: in its trailers, or in its head (trailers-only)."""
    value = trailers.get("grpc-status") if trailers is not None else None
    if value is None and head is not None:
        value = head.headers.get("grpc-status")
    return int(value) if value is not None and value.isdigit() else None


def record_response(span: Span, status: int, grpc_code: int | None) -> None:
    """The response's status on `span`, failing the span as the conventions say."""
    if status:
        span.attributes["http.response.status_code"] = status
    if grpc_code is not None:
        span.attributes["rpc.grpc.status_code"] = grpc_code
        failed = grpc_code in _GRPC_SERVER_ERRORS if span.kind is SpanKind.SERVER else grpc_code
        if failed:
            span.fail(str(grpc_code), f"grpc-status {grpc_code}")
            return
    if status >= (500 if span.kind is SpanKind.SERVER else 400):
        span.fail(str(status))
