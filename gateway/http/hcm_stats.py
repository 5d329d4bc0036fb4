"""The connection manager's stats: `http.NAME.*` (Envoy's names), and per route
`vhost.VHOST.route.INDEX.*` when the listener sets `per_route_stats`. Apart from the HCM so
that its connections and streams, which count in them, need not import it."""

import attrs

from gateway.observability.stats import (
    Counter,
    Gauge,
    Histogram,
    Scope,
    StatsStore,
    create_stats,
    describe,
)
from gateway.observability.stream_info import StreamInfo


@attrs.define
class Http2CodecStats:
    """`http.NAME.http2.*`: HTTP/2 connections closed because the client crossed a limit of
    gateway/protocol/h2_guard.py (Envoy's `http2.*` codec stats, kept per listener here)."""

    outbound_control_flood: Counter
    inbound_empty_frames_flood: Counter
    inbound_priority_frames_flood: Counter
    inbound_window_update_frames_flood: Counter
    #: A header block (HEADERS plus CONTINUATION frames) over max_header_list_size.
    header_overflow: Counter
    #: Streams refused (REFUSED_STREAM) beyond max_concurrent_streams.
    streams_refused: Counter


@attrs.define
class Http3CodecStats:
    """Envoy's `http3.*` codec stats, kept per listener."""

    #: Streams the client reset or stopped (RESET_STREAM, STOP_SENDING).
    rx_reset: Counter
    #: Streams the gateway reset before the response was complete.
    tx_reset: Counter
    #: Connections by the QUIC version they agreed on.
    quic_version_rfc_v1: Counter
    quic_version_rfc_v2: Counter


@attrs.define
class HcmStats:
    downstream_cx_total: Counter
    downstream_cx_active: Gauge
    downstream_cx_http1_total: Counter
    downstream_cx_http2_total: Counter
    downstream_cx_http3_total: Counter
    downstream_cx_protocol_error: Counter
    downstream_cx_idle_timeout: Counter
    downstream_cx_drain_close: Counter
    downstream_cx_destroy_remote_active_rq: Counter
    downstream_rq_total: Counter
    downstream_rq_active: Gauge
    downstream_rq_header_timeout: Counter
    #: Paths refused by normalisation (a stray `%`, an escaped slash refused): 400.
    downstream_rq_failed_path_normalization: Counter
    #: Paths with escaped slashes answered with a redirect to the unescaped path (307).
    downstream_rq_redirected_with_normalized_path: Counter
    #: Streams ended by `stream_idle_timeout` (408 before the response began).
    downstream_rq_idle_timeout: Counter
    downstream_rq_rx_reset: Counter
    downstream_rq_tx_reset: Counter
    downstream_cx_rapid_reset: Counter
    #: HTTP/2 connections closed because half of their streams were reset young (Envoy's).
    downstream_rq_too_many_premature_resets: Counter
    downstream_rs_trailers_dropped: Counter
    downstream_cx_upgrades_total: Counter
    downstream_cx_upgrades_active: Gauge
    downstream_cx_upgrade_rx_bytes_total: Counter
    downstream_cx_upgrade_tx_bytes_total: Counter
    downstream_rq_time: Histogram
    downstream_cx_admin_cancel: Counter
    downstream_rq_admin_cancel: Counter
    #: Requests refused (503, flag OM) by the overload action stop_accepting_requests.
    downstream_rq_overload_close: Counter
    #: Responses that ended keep-alive (HTTP/1.1 close, HTTP/2 GOAWAY) because the overload
    #: action disable_http_keepalive was active.
    downstream_cx_overload_disable_keepalive: Counter
    no_route: Counter
    by_class: dict[int, Counter]
    http2: Http2CodecStats
    http3: Http3CodecStats

    @classmethod
    def create(cls, scope: Scope) -> "HcmStats":
        by_class = {c: scope.counter(f"downstream_rq_{c}xx") for c in range(1, 6)}
        http2 = create_stats(Http2CodecStats, scope.child("http2"))
        http3 = create_stats(Http3CodecStats, scope.child("http3"))
        return create_stats(cls, scope, by_class=by_class, http2=http2, http3=http3)

    def flood(self, reason: str) -> Counter:
        """The counter of an HTTP/2 limit crossed (a FloodDetected reason)."""
        if reason == "rapid_reset":
            return self.downstream_cx_rapid_reset
        if reason == "too_many_premature_resets":
            return self.downstream_rq_too_many_premature_resets
        counter: Counter = getattr(self.http2, reason)
        return counter

    def record(self, info: StreamInfo) -> None:
        if 100 <= info.response_code <= 599:
            self.by_class[info.response_code // 100].value += 1
        self.downstream_rq_time.record(info.duration_ms())


describe(
    "http",
    {
        "downstream_cx_total": "Connections the HTTP connection manager handled.",
        "downstream_cx_active": "Connections open now.",
        "downstream_cx_http1_total": "Connections served as HTTP/1.1.",
        "downstream_cx_http2_total": "Connections served as HTTP/2.",
        "downstream_cx_http3_total": "Connections served as HTTP/3 (QUIC).",
        "downstream_cx_protocol_error": "Connections closed for a protocol error.",
        "downstream_cx_idle_timeout": "Connections closed by the idle_timeout.",
        "downstream_cx_drain_close": "Connections closed because the gateway was draining.",
        "downstream_cx_destroy_remote_active_rq": "HTTP/1.1 connections the client closed "
        "with a request in flight.",
        "downstream_cx_rapid_reset": "HTTP/2 connections closed for resetting streams too "
        "fast (rapid reset).",
        "downstream_rq_too_many_premature_resets": "HTTP/2 connections closed because half "
        "of their streams were reset young.",
        "downstream_cx_upgrades_total": "WebSocket tunnels opened.",
        "downstream_cx_upgrades_active": "WebSocket tunnels open now.",
        "downstream_cx_upgrade_rx_bytes_total": "Bytes tunnels carried from clients to upstreams.",
        "downstream_cx_upgrade_tx_bytes_total": "Bytes tunnels carried from upstreams to clients.",
        "downstream_cx_admin_cancel": "Connections cancelled with POST /tasks/ID/cancel.",
        "downstream_cx_overload_disable_keepalive": "Connections whose keep-alive the "
        "overload action disable_http_keepalive ended.",
        "downstream_rq_total": "Requests whose head was parsed.",
        "downstream_rq_active": "Requests in flight.",
        "downstream_rq_header_timeout": "HTTP/1.1 request heads not received within "
        "request_headers_timeout (408).",
        "downstream_rq_failed_path_normalization": "Requests refused (400) by path normalisation.",
        "downstream_rq_redirected_with_normalized_path": "Requests redirected (307) to "
        "their unescaped path.",
        "downstream_rq_idle_timeout": "Requests ended by stream_idle_timeout.",
        "downstream_rq_rx_reset": "HTTP/2 streams the client reset.",
        "downstream_rq_tx_reset": "HTTP/2 streams the gateway reset.",
        "downstream_rs_trailers_dropped": "Response trailers an HTTP/1.1 client could not be sent.",
        "downstream_rq_time": "Milliseconds from a request head to the end of its response.",
        "downstream_rq_admin_cancel": "Streams cancelled with POST /tasks/ID/cancel.",
        "downstream_rq_overload_close": "Requests refused (503) by the overload action "
        "stop_accepting_requests.",
        "no_route": "Requests that matched no route (404).",
        **{
            f"downstream_rq_{c}xx": f"Responses sent downstream with a {c}xx status."
            for c in range(1, 6)
        },
        "http2.outbound_control_flood": "HTTP/2 connections closed for flooding the "
        "gateway's control frame queue.",
        "http2.inbound_empty_frames_flood": "HTTP/2 connections closed for too many empty "
        "frames in a row.",
        "http2.inbound_priority_frames_flood": "HTTP/2 connections closed for too many "
        "PRIORITY frames.",
        "http2.inbound_window_update_frames_flood": "HTTP/2 connections closed for too many "
        "WINDOW_UPDATE frames.",
        "http2.header_overflow": "HTTP/2 connections closed: a header block outgrew "
        "max_header_list_size.",
        "http2.streams_refused": "HTTP/2 streams refused beyond max_concurrent_streams.",
        "http3.rx_reset": "HTTP/3 streams the client reset or stopped.",
        "http3.tx_reset": "HTTP/3 streams the gateway reset before the response ended.",
        "http3.quic_version_rfc_v1": "HTTP/3 connections on QUIC version 1 (RFC 9000).",
        "http3.quic_version_rfc_v2": "HTTP/3 connections on QUIC version 2 (RFC 9369).",
    },
)


@attrs.define
class RouteStats:
    """`vhost.VHOST.route.INDEX.*`, kept when the listener sets `per_route_stats`."""

    upstream_rq_completed: Counter
    upstream_rq_timeout: Counter
    upstream_rq_time: Histogram
    by_class: dict[int, Counter]

    @classmethod
    def create(cls, store: StatsStore, route_name: str) -> "RouteStats":
        vhost, _, index = route_name.rpartition("/")
        scope = store.scope(
            f"vhost.{vhost}.route.{index}",
            "vhost.route",
            {"envoy_virtual_host": vhost, "envoy_route": index},
        )
        by_class = {c: scope.counter(f"upstream_rq_{c}xx") for c in range(1, 6)}
        return create_stats(cls, scope, by_class=by_class)

    def record(self, info: StreamInfo) -> None:
        self.upstream_rq_completed.value += 1
        if 100 <= info.response_code <= 599:
            self.by_class[info.response_code // 100].value += 1
        if "UT" in info.response_flags:
            self.upstream_rq_timeout.value += 1
        self.upstream_rq_time.record(info.duration_ms())


describe(
    "vhost.route",
    {
        "upstream_rq_completed": "Requests the route matched that ended.",
        "upstream_rq_timeout": "Requests the route matched that timed out (flag UT).",
        "upstream_rq_time": "Milliseconds from request head to the end of the exchange.",
        **{
            f"upstream_rq_{c}xx": f"Responses to the route's requests with a {c}xx status."
            for c in range(1, 6)
        },
    },
)
