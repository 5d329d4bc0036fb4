"""Per-cluster stats (in /stats, Envoy's names) and per-host stats (in /clusters)."""

import ssl

import attrs

from gateway.observability.stats import Counter, Gauge, Histogram, Scope, create_stats, describe

_RESPONSE_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@attrs.define
class ClusterStats:
    upstream_cx_total: Counter
    upstream_cx_active: Gauge
    upstream_cx_connect_fail: Counter
    upstream_cx_connect_timeout: Counter
    upstream_cx_destroy: Counter
    upstream_cx_idle_timeout: Counter
    #: Connections closed because the upstream broke HTTP framing (bytes past a response's
    #: end included): never lent again.
    upstream_cx_protocol_error: Counter
    upstream_rq_total: Counter
    upstream_rq_active: Gauge
    upstream_rq_timeout: Counter
    upstream_rq_pending_overflow: Counter
    upstream_rq_pending_active: Gauge
    upstream_rq_time: Histogram
    upstream_cx_none_healthy: Counter
    upstream_cx_overflow: Counter
    upstream_rq_per_try_timeout: Counter
    upstream_rq_retry: Counter
    upstream_rq_retry_success: Counter
    upstream_rq_retry_overflow: Counter
    upstream_rq_retry_limit_exceeded: Counter
    upstream_rq_retry_backoff_exponential: Counter
    lb_healthy_panic: Counter
    membership_healthy: Gauge
    membership_total: Gauge
    membership_change: Counter
    #: DNS refreshes of strict_dns / logical_dns clusters.
    update_attempt: Counter
    update_success: Counter
    update_failure: Counter
    upstream_rq_by_class: dict[str, Counter]

    #: `cluster.NAME.ssl.*`, for clusters with `tls`.
    ssl: "UpstreamSslStats | None"

    @classmethod
    def create(cls, scope: Scope, tls: bool = False) -> "ClusterStats":
        by_class = {c: scope.counter(f"upstream_rq_{c}") for c in _RESPONSE_CLASSES}
        ssl = create_stats(UpstreamSslStats, scope.child("ssl")) if tls else None
        return create_stats(cls, scope, upstream_rq_by_class=by_class, ssl=ssl)

    def record_connect(self, error: BaseException | None) -> None:
        """A TLS cluster's connect: a handshake done, or why it failed (Envoy's
        cluster.NAME.ssl.*)."""
        if self.ssl is None:
            return
        if error is None:
            self.ssl.handshake.inc()
        elif isinstance(error, ssl.SSLError):
            self.ssl.connection_error.inc()
            if isinstance(error, ssl.SSLCertVerificationError):
                self.ssl.fail_verify_error.inc()

    def record_response(self, status: int) -> None:
        if 100 <= status <= 599:
            self.upstream_rq_by_class[f"{status // 100}xx"].value += 1


@attrs.define
class UpstreamSslStats:
    handshake: Counter
    connection_error: Counter
    #: The upstream's certificate did not verify (wrong CA, wrong name, expired).
    fail_verify_error: Counter


describe(
    "cluster",
    {
        "upstream_cx_total": "Connections opened or attempted.",
        "upstream_cx_active": "Connections open now.",
        "upstream_cx_connect_fail": "Connection attempts that failed.",
        "upstream_cx_connect_timeout": "Connection attempts that exceeded connect_timeout.",
        "upstream_cx_destroy": "Established connections closed.",
        "upstream_cx_idle_timeout": "Idle pooled connections closed.",
        "upstream_cx_protocol_error": "Connections closed because the upstream broke HTTP framing.",
        "upstream_cx_overflow": "Connections not opened: max_connections were open.",
        "upstream_cx_none_healthy": "Requests that found no healthy host (503, flag UH).",
        "upstream_rq_total": "Attempts sent towards a host, each retry counting again.",
        "upstream_rq_active": "Requests in flight.",
        "upstream_rq_pending_active": "Requests waiting for a pooled connection.",
        "upstream_rq_pending_overflow": "Requests that got no connection (503, flag UO).",
        "upstream_rq_timeout": "Requests that exceeded the route timeout (flag UT).",
        "upstream_rq_per_try_timeout": "Attempts that exceeded per_try_timeout.",
        "upstream_rq_retry": "Retries made.",
        "upstream_rq_retry_success": "Retried requests that ended below 500.",
        "upstream_rq_retry_overflow": "Failures not retried: the max_retries breaker was full.",
        "upstream_rq_retry_limit_exceeded": "Failures not retried: num_retries was used up.",
        "upstream_rq_retry_backoff_exponential": "Back-off waits before a retry.",
        "upstream_rq_time": "Milliseconds from choosing a host to the end of the exchange, "
        "per attempt.",
        **{f"upstream_rq_{c}": f"Upstream responses with a {c} status." for c in _RESPONSE_CLASSES},
        "lb_healthy_panic": "Host picks made in panic mode.",
        "membership_total": "Hosts in the cluster.",
        "membership_healthy": "Hosts with no health flag.",
        "membership_change": "Changes of the host set by DNS.",
        "update_attempt": "DNS resolutions started.",
        "update_success": "DNS resolutions that returned an address.",
        "update_failure": "DNS resolutions that failed.",
        "ssl.handshake": "TLS handshakes completed with upstreams.",
        "ssl.connection_error": "TLS handshakes with upstreams that failed.",
        "ssl.fail_verify_error": "Upstream certificates that did not verify.",
    },
)


@attrs.define
class HostStats:
    """Envoy's per-host stats, as /clusters prints them (`cluster::host::stat::value`)."""

    cx_total: int = 0
    cx_active: int = 0
    cx_connect_fail: int = 0
    rq_total: int = 0
    rq_active: int = 0
    rq_success: int = 0
    rq_error: int = 0
    rq_timeout: int = 0
