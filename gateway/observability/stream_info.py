"""What is known about one request as it flows: Envoy's StreamInfo.

The connection manager fills in the downstream facts, the router the upstream ones. Filters
read it; the access log and the task tree render it.
"""

import time

import attrs
import trio

from gateway.observability.tracing.span import Span
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead


def _now() -> float:
    """trio's clock (virtual in a `gateway test` scenario); the monotonic clock outside a
    trio run (a unit test's stream)."""
    try:
        return trio.current_time()
    except RuntimeError:  # outside a trio run
        return time.monotonic()


@attrs.define
class StreamInfo:
    stream_id: int
    downstream_remote: str
    #: The address the client connected to ("ip:port", "-" if unknown).
    downstream_local: str = "-"
    protocol: str = "HTTP/1.1"
    start_time: float = attrs.field(factory=time.time)
    start_monotonic: float = attrs.field(factory=_now)
    method: str = "-"
    path: str = "-"
    authority: str = "-"
    request_id: str = "-"
    user_agent: str = "-"
    forwarded_for: str = "-"
    #: What the stream is doing now, for /tasks ("reading request body", ...).
    state: str = "decoding headers"
    route_name: str = "-"
    cluster_name: str = "-"
    upstream_host: str = "-"
    #: 0 until a response head is sent (as Envoy logs it).
    response_code: int = 0
    response_flags: list[str] = attrs.Factory(list)
    bytes_received: int = 0
    bytes_sent: int = 0
    #: Milliseconds from the start until the upstream's response head, if any.
    upstream_service_time_ms: int | None = None
    #: SNI the client sent, and the subject of the certificate it presented (mTLS), as
    #: Envoy's %REQUESTED_SERVER_NAME% and %DOWNSTREAM_PEER_SUBJECT%.
    requested_server_name: str = "-"
    downstream_peer_subject: str = "-"
    #: The W3C trace this request belongs to (from `traceparent`), for the access log.
    trace_id: str = "-"
    #: The request and response heads as they are now (rewrites included), read by access
    #: log operators such as %REQ(X)%. References, not copies.
    request_head: RequestHead | None = None
    response_head: ResponseHead | None = None
    #: The response's trailers as they went out (gRPC's status is there).
    response_trailers: HeaderMap | None = None
    #: The request's SERVER span, when `[tracing]` sampled it; None otherwise (the data
    #: path records spans only where this is set).
    span: Span | None = None

    def add_flag(self, flag: str) -> None:
        if flag != "-" and flag not in self.response_flags:
            self.response_flags.append(flag)

    @property
    def downstream_ip(self) -> str:
        """The client's address without its port ("[::1]:5000" -> "::1")."""
        return self.downstream_remote.rpartition(":")[0].strip("[]")

    @property
    def flags_text(self) -> str:
        return ",".join(self.response_flags) or "-"

    def duration_ms(self) -> int:
        return int((_now() - self.start_monotonic) * 1000)
