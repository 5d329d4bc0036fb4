"""The spans of a traced request's upstream work: one CLIENT span per attempt, children of
the request's SERVER span (so retries are siblings, each saying why the try before it was
retried), the wait for a pooled connection inside each attempt, and a tunnel's life.

The upstream is told that the attempt's span is its parent (`traceparent`, and B3 if the
client spoke B3): each retry names its own span, so the upstream's spans hang under the
attempt that reached it. Only a sampled request has a SERVER span; the router makes none
of this otherwise.
"""

from gateway.clusters.cluster import Cluster
from gateway.clusters.host import Host
from gateway.io.tunnel import TunnelResult
from gateway.observability.stream_info import StreamInfo
from gateway.observability.tracing import semconv
from gateway.observability.tracing.span import Span, SpanKind
from gateway.protocol.headers import HeaderMap, RequestHead
from gateway.protocol.trace_context import inject
from gateway.router.retry import RetryableResponse, RetryState


class AttemptTrace:
    """One attempt's CLIENT span, and its pool wait while that lasts."""

    __slots__ = ("_wait", "span")

    def __init__(
        self,
        parent: Span,
        request: RequestHead,
        cluster: Cluster,
        host: Host,
        grpc_call: bool,
        retry: RetryState | None,
    ) -> None:
        span = self.span = parent.child(semconv.span_name(request, grpc_call), SpanKind.CLIENT)
        version = "2" if cluster.config.protocol == "http2" else "1.1"
        span.attributes.update(semconv.upstream_attributes(request, str(host), version, grpc_call))
        span.attributes["gateway.cluster"] = cluster.name
        if retry is not None and retry.attempt > 1:
            span.attributes["http.request.resend_count"] = retry.attempt - 1
            span.attributes["gateway.retry.reason"] = retry.reason
        self._wait: Span | None = None

    def wait_for_connection(self) -> None:
        """The attempt asks its host's pool for a connection (HTTP/2: a stream)."""
        self._wait = self.span.child("pool wait")

    def connected(self, headers: HeaderMap) -> None:
        """A connection was lent: the wait is over, and the request names this attempt's
        span as the upstream's parent."""
        if self._wait is not None:
            self._wait.end()
        span = self.span
        inject(headers, span.trace.trace_id, span.span_id, True, span.trace.propagation)

    def end(self, status: int, failure: BaseException | None, info: StreamInfo) -> None:
        """The attempt is over: answered with `status` (0: no answer), or failed."""
        span = self.span
        wait = self._wait
        if wait is not None and not wait.end_ns:  # the pool never lent a connection
            wait.fail(type(failure).__name__ if failure is not None else "_OTHER")
            wait.end()
        grpc_code = None
        if span.attributes.get("rpc.system") == "grpc":
            if isinstance(failure, RetryableResponse):
                grpc_code = semconv.grpc_status(failure.head, None)
            elif status:
                grpc_code = semconv.grpc_status(info.response_head, info.response_trailers)
        semconv.record_response(span, status, grpc_code)
        if failure is not None and not span.error:
            span.fail(type(failure).__name__)
        span.end()


def start_tunnel(parent: Span) -> Span:
    """A tunnel's span (WebSocket or CONNECT): from the upgrade's answer to its end."""
    return parent.child("tunnel")


def end_tunnel(span: Span, result: TunnelResult) -> None:
    span.attributes["gateway.tunnel.bytes_up"] = result.sent_up
    span.attributes["gateway.tunnel.bytes_down"] = result.sent_down
    if result.cut:
        span.fail(result.cut, "tunnel cut")
    span.end()
