"""The configuration model: frozen attrs classes, one per TOML table.

The TOML schema is a public interface. Tables refer to each other by name
(`listeners.*.virtual_hosts` names `[virtual_hosts.*]`, routes name `[clusters.*]`), the
way Envoy's resources refer to each other, instead of nesting everything under a listener.
Field names follow Envoy's protobuf names where a concept exists there.

Units live in the types: `Duration` values are seconds (parsed from "250ms", "1.5s", "2m");
`ByteSize` values are bytes (an integer, or "512MiB", "2GiB"); `Address` is parsed from
"host:port" or "[v6]:port".

Every number has bounds, as Envoy's protobuf validation rules give them: the config is
input from outside (a file, a control plane), and a number the gateway cannot afford
(a Maglev table of 2^61 slots, a health check every microsecond) is an error with its
TOML path, not work that stalls a worker's event loop.
"""

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal, NewType

import attrs

from gateway.config.regex import check_regex
from gateway.observability.access_log_format import compile_format

#: Seconds, parsed from strings like "250ms", "1.5s", "2m", "1h".
Duration = NewType("Duration", float)
#: Bytes, written as an integer or with a binary unit: "64KiB", "512MiB", "2GiB".
ByteSize = NewType("ByteSize", int)

#: Envoy's uint32 fields without a range of their own hold at most this.
UINT32_MAX = 2**32 - 1
#: HTTP/2 SETTINGS values and windows (RFC 9113 6.5.2) hold at most this.
INT31_MAX = 2**31 - 1
#: The longest duration anywhere ("8760h", a year): "0s" says "never" where that makes
#: sense, so anything longer is a typo.
MAX_DURATION = 365 * 24 * 3600.0
#: Periodic work (health checks, DNS, PINGs, polls) runs at most every millisecond, as
#: Envoy's floors for dns_refresh_rate and connection_keepalive.interval.
MIN_PERIOD = 0.001
#: Envoy's max_request_headers_kb and max_response_headers_kb go up to this.
MAX_HEADERS_KB = 8192
#: The largest byte size (1 PiB): more is a typo, and never fits in memory.
MAX_BYTE_SIZE = 1 << 50
#: No Python process runs in less: a max_rss below it is a unit mistake.
MIN_RSS = 1 << 20

_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def between(low: float, high: float) -> _Validator:
    """A validator for a number from `low` to `high`, both included."""

    def check(instance: object, attribute: "attrs.Attribute[Any]", value: float) -> None:
        if not low <= value <= high:
            raise ValueError(f"'{attribute.name}' must be from {low} to {high}, got {value}")

    return check


def _seconds_text(seconds: float) -> str:
    return f"{seconds * 1000:g}ms" if seconds < 1 else f"{seconds:g}s"


def at_least(minimum: float, *, or_zero: bool = False) -> _Validator:
    """A duration's floor (`or_zero`: "0s", meaning never, is allowed too)."""

    def check(instance: object, attribute: "attrs.Attribute[Any]", value: float | None) -> None:
        if value is None or value >= minimum or (or_zero and value == 0):
            return
        zero = ' (or "0s": never)' if or_zero else ""
        raise ValueError(
            f"'{attribute.name}' must be at least {_seconds_text(minimum)}{zero}, "
            f"got {_seconds_text(value)}"
        )

    return check


@attrs.frozen
class Address:
    """A TCP address. Port 0 asks the OS for a free port (tests use it everywhere)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


# --- admin and server -----------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_admin_exposure(instance: "Admin", attribute: object, value: bool) -> None:
    if not value and not is_loopback(instance.address.host):
        raise ValueError(
            f"'address' must be a loopback address unless allow_non_loopback = true "
            f"(the admin endpoint has no authentication), got '{instance.address}'"
        )


@attrs.frozen
class Admin:
    """`[admin]`: the admin endpoint, served by hypercorn. Loopback by default."""

    address: Address = Address("127.0.0.1", 9901)
    #: Binding anything but loopback must be asked for: admin has no authentication and
    #: can cancel requests and stop the gateway.
    allow_non_loopback: bool = attrs.field(default=False, validator=_check_admin_exposure)
    #: Annotate tasks for /tasks (kind, state, peer, route, ...). Off, /tasks shows bare
    #: Trio tasks and nothing can be cancelled from admin.
    task_tree: bool = True


#: Bucket bounds one histogram may have (Envoy's default has 20).
MAX_HISTOGRAM_BUCKETS = 100


def _check_buckets(instance: object, attribute: object, value: list[float]) -> None:
    if not value or any(b <= 0 for b in value) or sorted(set(value)) != value:
        raise ValueError(f"'buckets' must be positive and strictly increasing, got {value!r}")
    if len(value) > MAX_HISTOGRAM_BUCKETS:
        raise ValueError(f"'buckets' must be at most {MAX_HISTOGRAM_BUCKETS}, got {len(value)}")


def check_regexes(
    instance: object, attribute: "attrs.Attribute[Any]", value: str | list[str] | None
) -> None:
    """An attrs validator for a field holding a regex, an optional one, or a list."""
    patterns = [] if value is None else [value] if isinstance(value, str) else value
    for pattern in patterns:
        if error := check_regex(pattern):
            raise ValueError(f"'{attribute.name}' must be a valid RE2 regex: {error}")


@attrs.frozen
class HistogramBuckets:
    """`[[server.histogram_buckets]]`: bucket bounds for the histograms whose dotted name
    matches `match` (Envoy's histogram_bucket_settings); the first matching entry wins."""

    #: A regex searched in the histogram's dotted name (`cluster\\.api\\.`, `_rq_time$`).
    match: str = attrs.field(validator=check_regexes)
    #: Upper bounds, in the histogram's unit (milliseconds for times), increasing.
    buckets: list[float] = attrs.field(validator=_check_buckets)


@attrs.frozen
class Server:
    """`[server]`: process-wide settings."""

    #: How long in-flight requests may run after SIGTERM/SIGINT, or on a listener a reload
    #: changed, before they are cut.
    drain_timeout: Duration = Duration(10.0)
    #: Histogram bucket overrides; histograms no entry matches use Envoy's defaults.
    histogram_buckets: list[HistogramBuckets] = attrs.Factory(list)
    #: Draining connections still take what a client may already have sent: an HTTP/2
    #: connection first announces GOAWAY with the highest stream id and refuses new
    #: streams only this long after (RFC 9113 6.8); an idle HTTP/1.1 keep-alive
    #: connection stays open this long for a request already on its way.
    drain_grace: Duration = Duration(1.0)
    #: Worker processes, each with its own listeners (SO_REUSEPORT), pools and Trio loop;
    #: "auto": one per CPU this process may run on. 1 runs in-process, with no supervisor.
    workers: int | Literal["auto"] = "auto"
    #: Reload when the config file changes (checked every second), as on SIGHUP.
    watch: bool = False
    #: How often stats go to the `[[stats_sinks]]` (Envoy's bootstrap stats_flush_interval:
    #: it sits here with histogram_buckets, the other process-wide stats setting).
    stats_flush_interval: Duration = attrs.field(
        default=Duration(5.0), validator=at_least(MIN_PERIOD)
    )
    #: The application log's format on stderr: "text" lines, or one JSON object a line.
    log_format: Literal["text", "json"] = "text"


# --- stats sinks ----------------------------------------------------------------------------

#: What fits in one Ethernet frame with IPv4/IPv6 and UDP headers and some room for
#: tunnels: the size statsd clients use by default (DogStatsD's, Etsy's advice).
SAFE_DATAGRAM_BYTES = 1432
#: The most a UDP datagram can carry (over IPv4).
MAX_DATAGRAM_BYTES = 65507
_STAT_PREFIX = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _check_sink_port(instance: object, attribute: object, value: Address) -> None:
    if not 1 <= value.port <= 65535:
        raise ValueError(f"'address' must have a port from 1 to 65535, got '{value}'")


def _check_stat_prefix(instance: object, attribute: object, value: str) -> None:
    # `:`, `|`, `@`, `#` and line breaks are statsd's own syntax.
    if not _STAT_PREFIX.match(value):
        raise ValueError(
            f"'prefix' must be letters, digits, '_', '-' and dots (not first), got {value!r}"
        )


@attrs.frozen
class StatsSink:
    """`[[stats_sinks]]`: where stats go every `[server] stats_flush_interval`, over UDP
    (Envoy's envoy.stat_sinks.statsd and envoy.stat_sinks.dog_statsd)."""

    type: Literal["statsd", "dog_statsd"]
    #: The statsd (or DogStatsD agent) UDP address.
    address: Address = attrs.field(validator=_check_sink_port)
    #: Put before every name, with a dot (Envoy's default for both sinks).
    prefix: str = attrs.field(default="envoy", validator=_check_stat_prefix)
    #: Lines are packed into datagrams up to this size (Envoy's max_bytes_per_datagram); a
    #: longer line goes alone.
    max_bytes_per_datagram: int = attrs.field(
        default=SAFE_DATAGRAM_BYTES, validator=between(64, MAX_DATAGRAM_BYTES)
    )


# --- overload -------------------------------------------------------------------------------

#: Envoy's overload actions the gateway has, by the last part of their name
#: (`envoy.overload_actions.NAME`).
OverloadActionName = Literal[
    "stop_accepting_connections", "disable_http_keepalive", "stop_accepting_requests"
]


@attrs.frozen
class OverloadAction:
    """`[[overload.actions]]`: an overload action and the fraction of `max_rss` at which it
    starts (Envoy's threshold trigger on a memory resource monitor)."""

    name: OverloadActionName
    #: Active while RSS >= threshold * max_rss.
    threshold: float = attrs.field(validator=[attrs.validators.gt(0), attrs.validators.le(1)])


#: When `max_rss` is set and `actions` is not: keep-alive goes first (connections close
#: and free their buffers), then new connections wait in the backlog, and only near the
#: limit are requests refused.
DEFAULT_OVERLOAD_ACTIONS = (
    OverloadAction("disable_http_keepalive", 0.90),
    OverloadAction("stop_accepting_connections", 0.95),
    OverloadAction("stop_accepting_requests", 0.98),
)


@attrs.frozen
class Overload:
    """`[overload]`: Envoy's overload manager, per worker process. A cap on downstream
    connections, and actions that shed load as memory (RSS) nears `max_rss`."""

    #: Open downstream connections across all listeners (HTTP and tcp_proxy); one more is
    #: closed at once (Envoy's global_downstream_max_connections). Unset: no cap.
    max_downstream_connections: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(between(1, UINT32_MAX))
    )
    #: The resident memory the actions' thresholds are fractions of. Unset: no actions.
    max_rss: ByteSize | None = attrs.field(
        default=None, validator=attrs.validators.optional(between(MIN_RSS, MAX_BYTE_SIZE))
    )
    #: How often the resource monitor reads the RSS (Envoy's refresh_interval).
    refresh_interval: Duration = attrs.field(default=Duration(1.0), validator=at_least(MIN_PERIOD))
    actions: list[OverloadAction] = attrs.Factory(lambda: list(DEFAULT_OVERLOAD_ACTIONS))


# --- listeners ------------------------------------------------------------------------------


@attrs.frozen
class AccessLogFilter:
    """`filter` of an access log: which requests it records. Every condition set must hold
    (Envoy's status_code_filter, duration_filter and response_flag_filter, and-ed)."""

    #: Only responses with at least this status (0, no response, is below every status).
    min_status_code: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(between(0, 599))
    )
    #: Only requests that took at least this long.
    min_duration: Duration | None = None
    #: Only requests with one of these response flags ("UF", "UT", ...).
    response_flags: list[str] = attrs.Factory(list)


def _check_operators(
    instance: object, attribute: "attrs.Attribute[Any]", value: str | dict[str, str] | None
) -> None:
    formats = value.values() if isinstance(value, dict) else [value] if value else []
    for text in formats:
        try:
            compile_format(text)
        except ValueError as exc:
            raise ValueError(f"'{attribute.name}' must use known operators: {exc}") from None


def _one_format(
    instance: "AccessLog", attribute: "attrs.Attribute[Any]", value: dict[str, str] | None
) -> None:
    if instance.text_format is not None and value is not None:
        raise ValueError("'json_format' must not be set together with text_format")
    _check_operators(instance, attribute, value)


@attrs.frozen
class AccessLog:
    """`[listeners.NAME.access_log]` (or several, `[[listeners.NAME.access_log]]`): one line
    per request."""

    #: A file path, or "-" for standard output.
    path: str = "-"
    #: "envoy" (Envoy's default text format) or "json" (one object per line); ignored when
    #: text_format or json_format is set.
    format: Literal["envoy", "json"] = "envoy"
    #: How often buffered lines are flushed; "0s" flushes every line.
    flush_interval: Duration = Duration(1.0)
    #: A line made of Envoy command operators: "%REQ(:METHOD)% %RESPONSE_CODE%\n".
    text_format: str | None = attrs.field(default=None, validator=_check_operators)
    #: One JSON object per line: key -> a string of command operators.
    json_format: dict[str, str] | None = attrs.field(default=None, validator=_one_format)
    filter: AccessLogFilter = AccessLogFilter()


@attrs.frozen
class Http2ProtocolOptions:
    """`[listeners.NAME.http2]` and `[clusters.NAME.http2]`: HTTP/2 settings (Envoy's
    Http2ProtocolOptions). Windows bound the memory one stream or connection can hold."""

    #: SETTINGS_MAX_CONCURRENT_STREAMS we advertise (listeners), or the most streams we
    #: open on one upstream connection (clusters; the peer's own limit also applies).
    max_concurrent_streams: int = attrs.field(default=100, validator=between(1, INT31_MAX))
    #: SETTINGS_INITIAL_WINDOW_SIZE: bytes a peer may send on one stream before we credit it.
    initial_stream_window_size: int = attrs.field(
        default=1 << 20, validator=between(65535, INT31_MAX)
    )
    #: Bytes a peer may send on the whole connection before we credit it.
    initial_connection_window_size: int = attrs.field(
        default=4 << 20, validator=between(65535, INT31_MAX)
    )
    #: SETTINGS_MAX_FRAME_SIZE we accept.
    max_frame_size: int = attrs.field(default=16384, validator=between(16384, (1 << 24) - 1))
    #: SETTINGS_MAX_HEADER_LIST_SIZE: decoded header bytes we accept on one stream.
    max_header_list_size: int = attrs.field(
        default=65536, validator=between(1, MAX_HEADERS_KB * 1024)
    )
    #: Listeners: a client resetting more streams than this in one second gets GOAWAY
    #: (ENHANCE_YOUR_CALM) and is closed, the defence against the 2023 "rapid reset" attack.
    max_stream_resets_per_second: int = attrs.field(default=200, validator=between(1, INT31_MAX))
    #: Clusters: send a PING this often on an upstream connection ("0s": never) ...
    keepalive_interval: Duration = attrs.field(
        default=Duration(30.0), validator=at_least(MIN_PERIOD, or_zero=True)
    )
    #: ... and close it if the PING is not answered within this long.
    keepalive_timeout: Duration = attrs.field(default=Duration(5.0), validator=at_least(MIN_PERIOD))
    # Listeners: what a client may make the gateway do besides requests (Envoy's names and
    # defaults; see gateway/protocol/h2_guard.py). Crossing one: GOAWAY ENHANCE_YOUR_CALM.
    #: Control frames (PING and SETTINGS acks, RST_STREAM) queued and not yet written.
    max_outbound_control_frames: int = attrs.field(default=1000, validator=between(1, UINT32_MAX))
    #: DATA frames with neither data nor END_STREAM, in a row.
    max_consecutive_inbound_frames_with_empty_payload: int = attrs.field(
        default=1, validator=between(0, UINT32_MAX)
    )
    #: PRIORITY frames per stream the client opened (plus this many for the connection).
    max_inbound_priority_frames_per_stream: int = attrs.field(
        default=100, validator=between(0, UINT32_MAX)
    )
    #: WINDOW_UPDATE frames per DATA frame the gateway sent (plus this many).
    max_inbound_window_update_frames_per_data_frame_sent: int = attrs.field(
        default=10, validator=between(1, UINT32_MAX)
    )
    #: A stream reset (by either side) younger than this is a premature reset ...
    premature_reset_min_stream_lifetime: Duration = Duration(1.0)
    #: ... and a connection where half of the closed streams (over at least this many)
    #: were premature resets is closed.
    premature_reset_total_stream_count: int = attrs.field(
        default=500, validator=between(2, UINT32_MAX)
    )


def _check_cidrs(
    instance: object, attribute: "attrs.Attribute[list[str]]", value: list[str]
) -> None:
    for cidr in value:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise ValueError(f"'{attribute.name}' must hold CIDRs: {exc}") from None


@attrs.frozen
class FilterChainMatch:
    """When a filter chain applies (Envoy's filter_chain_match). Unset criteria match
    anything; among the chains that match, the most specific one wins, criterion by
    criterion in this order."""

    #: The port the connection arrived on (a listener may bind several).
    destination_port: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(between(1, 65535)),
    )
    #: SNI from the TLS ClientHello: exact names or "*.suffix" (exact beats wildcard, a
    #: longer suffix beats a shorter one).
    server_names: list[str] = attrs.Factory(list)
    #: "tls" if the connection opens with a TLS ClientHello, else "raw_buffer".
    transport_protocol: Literal["tls", "raw_buffer"] | None = None
    #: ALPN protocols offered in the ClientHello; any one in common matches.
    application_protocols: list[str] = attrs.Factory(list)
    #: The client's address, as CIDRs; the longest matching prefix wins.
    source_prefix_ranges: list[str] = attrs.field(factory=list, validator=_check_cidrs)


@attrs.frozen
class TlsCertificate:
    """A PEM certificate chain (leaf first) and its PEM private key, as file paths."""

    certificate_chain: str
    private_key: str


@attrs.frozen
class DownstreamTlsContext:
    """`tls` of a filter chain: terminate TLS (Envoy's DownstreamTlsContext)."""

    #: Several certificates are chosen by SNI (their DNS names); the first is the default.
    certificates: list[TlsCertificate]
    #: Offered to clients in this order of preference; "h2" makes the HCM speak HTTP/2.
    alpn_protocols: list[str] = attrs.Factory(lambda: ["h2", "http/1.1"])
    #: PEM CA bundle that client certificates must chain to (mTLS).
    trusted_ca: str | None = None
    #: Refuse clients without a valid certificate (needs trusted_ca).
    require_client_certificate: bool = False
    min_protocol_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"
    #: A handshake not done within this long is cut (Envoy's
    #: transport_socket_connect_timeout).
    handshake_timeout: Duration = attrs.field(
        default=Duration(10.0), validator=at_least(MIN_PERIOD)
    )


@attrs.frozen
class UpstreamTlsContext:
    """`[clusters.NAME.tls]`: TLS to the upstream endpoints (Envoy's UpstreamTlsContext)."""

    #: Server name sent in the ClientHello and checked against the certificate; unset: the
    #: endpoint's host if it is a name.
    sni: str | None = None
    #: PEM CA bundle to verify the upstream with; unset: the system's trusted CAs.
    trusted_ca: str | None = None
    #: Turning this off accepts any certificate: for tests only.
    verify_certificate: bool = True
    #: Client certificate for upstreams that require one.
    certificate: TlsCertificate | None = None
    #: Unset: ["h2"] for http2 clusters, ["http/1.1"] for http1, none for tcp_proxy use.
    alpn_protocols: list[str] | None = None
    min_protocol_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"


@attrs.frozen
class QuicProtocolOptions:
    """`[listeners.NAME.quic]`: a QUIC listener's certificate and transport settings
    (Envoy's QuicProtocolOptions and DownstreamQuicTransport). The listener speaks HTTP/3
    (ALPN h3) over QUIC with TLS 1.3, which QUIC requires."""

    #: The certificate chain and key QUIC's TLS 1.3 handshake presents. One for now: a
    #: QUIC listener does not choose certificates by SNI.
    certificates: list[TlsCertificate] = attrs.Factory(list)
    #: Request streams one client may have open at once (QUIC's MAX_STREAMS); more wait
    #: for a stream to end, as QUIC makes them.
    max_concurrent_streams: int = attrs.field(default=100, validator=between(1, INT31_MAX))
    #: Request body bytes a client may send on one stream before the gateway forwarded
    #: them (QUIC's MAX_STREAM_DATA): what a slow upstream makes the gateway hold.
    initial_stream_window_size: int = attrs.field(
        default=1 << 20, validator=between(16384, INT31_MAX)
    )
    #: The same for the whole connection (MAX_DATA).
    initial_connection_window_size: int = attrs.field(
        default=4 << 20, validator=between(16384, INT31_MAX)
    )
    #: A connection with no packets either way for this long is closed (QUIC's
    #: max_idle_timeout; the listener's idle_timeout also closes one with no request).
    idle_timeout: Duration = attrs.field(default=Duration(300.0), validator=at_least(1.0))
    #: A handshake not done within this long is abandoned (Envoy's
    #: crypto_handshake_timeout).
    handshake_timeout: Duration = attrs.field(
        default=Duration(10.0), validator=at_least(MIN_PERIOD)
    )
    #: Validate every client's address with a stateless Retry before any handshake work
    #: (RFC 9000 8.1.2): a spoofed source cannot make the gateway do TLS. Costs new
    #: clients one round trip. Off: QUIC's anti-amplification limit still holds (no more
    #: than 3x the bytes received are sent to an unvalidated address).
    retry: bool = False
    #: A client resetting more streams than this in one second is closed (H3_EXCESSIVE_LOAD),
    #: as `http2.max_stream_resets_per_second` does for HTTP/2.
    max_stream_resets_per_second: int = attrs.field(default=200, validator=between(1, INT31_MAX))
    #: Datagrams queued for one connection while its task is busy; more are dropped
    #: (QUIC retransmits), so a flood cannot grow memory.
    max_queued_datagrams: int = attrs.field(default=256, validator=between(1, 1 << 20))


@attrs.frozen(kw_only=True)
class HttpConnectionManagerOptions:
    """The HTTP connection manager's keys: a single-chain listener's own, and each
    `http_connection_manager` network filter's in a filter chain."""

    #: Names of `[virtual_hosts.*]`, matched against Host in order of specificity.
    virtual_hosts: list[str] = attrs.Factory(list)
    #: Names of `[http_filters.*]`, run in order; the router is always last, implicitly.
    http_filters: list[str] = attrs.Factory(list)
    #: Time allowed for a whole request head, from its first byte (slowloris: 408).
    request_headers_timeout: Duration = Duration(10.0)
    #: A keep-alive connection with no request in flight is closed after this long.
    idle_timeout: Duration = Duration(300.0)
    #: When the gateway closes a connection, it half-closes and reads what the client
    #: still sends for up to this long, so a final 4xx or GOAWAY is not lost to a TCP
    #: reset (Envoy's delayed_close_timeout); "0s": close at once.
    delayed_close_timeout: Duration = Duration(1.0)
    #: A stream with no bytes either way for this long is ended (408 before the response
    #: began, else reset), whatever its route timeout; "0s": never (Envoy's default 5m).
    stream_idle_timeout: Duration = Duration(300.0)
    #: Limit on the request line plus headers, in KiB (431 above it).
    max_request_headers_kb: int = attrs.field(default=60, validator=between(1, MAX_HEADERS_KB))
    #: Limit on the number of request headers (431 above it).
    max_request_headers_count: int = attrs.field(default=100, validator=between(1, UINT32_MAX))
    #: Access logs: one table, or several (`[[listeners.NAME.access_log]]`).
    access_log: list[AccessLog] = attrs.Factory(list)
    #: Keep `vhost.VHOST.route.INDEX.*` stats for the routes of this listener.
    per_route_stats: bool = False
    #: "auto" serves HTTP/1.1 and HTTP/2 (h2c prior knowledge, by the connection preface)
    #: on the same port; "http1" or "http2" serve only that.
    codec: Literal["auto", "http1", "http2"] = "auto"
    #: What parses HTTP/1.1 requests: "llhttp" (in C) or "h11" (pure Python, slower; it
    #: takes extension methods, which llhttp refuses). gateway/protocol/codec_h1.py.
    http1_parser: Literal["llhttp", "h11"] = "llhttp"
    http2: Http2ProtocolOptions = Http2ProtocolOptions()
    #: Upgrades every route of this listener allows unless it says otherwise (Envoy's
    #: upgrade_configs): HTTP/1.1 `Upgrade:` and HTTP/2 extended CONNECT (RFC 8441).
    upgrade: list[Literal["websocket"]] = attrs.Factory(list)
    #: What an upgrade request gets on a route that does not allow it: "forward" it as an
    #: ordinary request (Upgrade is hop-by-hop and dropped), or "reject" it with 403.
    upgrade_not_allowed: Literal["forward", "reject"] = "forward"
    # Path normalisation before filters and routing (gateway/protocol/path_normalization.py).
    # On by default, as Envoy's edge best practices advise (Envoy's own defaults are off):
    # a gateway that matches one spelling of a path while the upstream acts on another
    # enforces nothing.
    #: RFC 3986: decode escaped unreserved characters, remove dot segments, `\` as `/`.
    normalize_path: bool = True
    #: `//` as `/`.
    merge_slashes: bool = True
    #: What `%2F` and `%5C` (escaped slashes) get.
    path_with_escaped_slashes_action: Literal[
        "keep_unchanged", "reject_request", "unescape_and_redirect", "unescape_and_forward"
    ] = "unescape_and_redirect"
    #: The name of a `protocol = "quic"` listener serving the same routes: responses get
    #: `alt-svc: h3=":PORT"; ma=86400`, so clients move to HTTP/3 (Envoy's
    #: alternate_protocols_cache on the client side, Caddy's default).
    advertise_http3: str | None = None


@attrs.frozen(kw_only=True)
class HttpConnectionManagerConfig(HttpConnectionManagerOptions):
    """A filter chain's `http_connection_manager` network filter."""

    type: Literal["http_connection_manager"]
    #: Stats go under `http.STAT_PREFIX.*`; unset: the listener's name.
    stat_prefix: str | None = None


@attrs.frozen
class TcpProxy:
    """The `tcp_proxy` network filter: bytes both ways to a host of `cluster` (L4)."""

    type: Literal["tcp_proxy"]
    cluster: str
    #: Stats go under `tcp.STAT_PREFIX.*`; unset: the listener's name.
    stat_prefix: str | None = None
    #: No bytes either way for this long closes both sides; "0s": never.
    idle_timeout: Duration = Duration(3600.0)
    #: Hosts tried (each picked by the cluster's load balancer) before giving up.
    max_connect_attempts: int = attrs.field(default=1, validator=between(1, UINT32_MAX))


@attrs.frozen
class NetworkRbac:
    """The `rbac` network filter: allow or deny connections by source address."""

    type: Literal["rbac"]
    #: "allow": only matching clients pass; "deny": matching clients are closed.
    action: Literal["allow", "deny"] = "allow"
    source_cidrs: list[str] = attrs.field(factory=list, validator=_check_cidrs)
    stat_prefix: str | None = None


@attrs.frozen
class ConnectionLimit:
    """The `connection_limit` network filter: at most this many open connections through
    the filter chain; more are closed at once."""

    type: Literal["connection_limit"]
    max_connections: int = attrs.field(validator=between(1, UINT32_MAX))
    stat_prefix: str | None = None


NetworkFilterConfig = HttpConnectionManagerConfig | TcpProxy | NetworkRbac | ConnectionLimit
#: `type` names of network filters; the last filter of a chain must be a terminal one.
NETWORK_FILTER_TYPES: dict[str, type[NetworkFilterConfig]] = {
    "http_connection_manager": HttpConnectionManagerConfig,
    "tcp_proxy": TcpProxy,
    "rbac": NetworkRbac,
    "connection_limit": ConnectionLimit,
}
TERMINAL_NETWORK_FILTERS = ("http_connection_manager", "tcp_proxy")


@attrs.frozen
class FilterChain:
    """`[[listeners.NAME.filter_chains]]`: a match, optional TLS, and network filters."""

    #: Network filters in order; the last is `http_connection_manager` or `tcp_proxy`.
    filters: list[NetworkFilterConfig]
    #: For logs and /tasks; unset: "filter_chains[INDEX]" (or "default").
    name: str | None = None
    filter_chain_match: FilterChainMatch = FilterChainMatch()
    #: Terminate TLS. Without it a chain may still match on SNI and pass the TLS bytes
    #: through untouched (to a tcp_proxy).
    tls: DownstreamTlsContext | None = None


@attrs.frozen
class Listener(HttpConnectionManagerOptions):
    """`[listeners.NAME]`: a bound address running the HTTP connection manager (the keys
    of HttpConnectionManagerOptions), or filter chains."""

    address: Address
    #: Filter chains, chosen per connection by their `filter_chain_match`. When set, the
    #: listener's HTTP keys are not used: each chain has its own `http_connection_manager`.
    filter_chains: list[FilterChain] = attrs.Factory(list)
    #: The chain for connections no chain matches; unset: they are closed.
    default_filter_chain: FilterChain | None = None
    #: How long to wait for a TLS ClientHello when a chain matches on what it says, and
    #: for the PROXY header.
    listener_filters_timeout: Duration = Duration(15.0)
    #: Every connection opens with a PROXY protocol header (v1 or v2) from an L4 balancer;
    #: its source address becomes the client's. A connection without one is closed.
    proxy_protocol: bool = False
    #: "tcp", or "quic": a UDP address serving HTTP/3 over QUIC with the listener's own
    #: HTTP keys (no filter chains) and the certificate in `quic`.
    protocol: Literal["tcp", "quic"] = "tcp"
    #: `protocol = "quic"`: the certificate and QUIC's transport settings.
    quic: QuicProtocolOptions = QuicProtocolOptions()


# --- HTTP filters ---------------------------------------------------------------------------


@attrs.frozen
class HttpFilter:
    """`[http_filters.NAME]`: `type` picks the filter; the other keys are its config."""

    type: str
    #: The filter's own config, structured by the filter's registered config class.
    config: object


@attrs.frozen
class GrpcService:
    """A gRPC service a filter calls (Envoy's GrpcService with envoy_grpc): `ext_authz`'s
    `grpc_service`, `ratelimit`'s `rate_limit_service`."""

    #: A `[clusters.*]` table with `protocol = "http2"`: the service's endpoints, reached
    #: through the cluster's pool like any upstream.
    cluster: str
    #: The deadline of each call (sent as grpc-timeout); unset: the filter's default.
    timeout: Duration | None = attrs.field(default=None, validator=at_least(MIN_PERIOD))


# --- routing --------------------------------------------------------------------------------


@attrs.frozen
class HeaderMatcher:
    """Matches one request header. Exactly one of the match kinds may be set."""

    name: str
    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    contains: str | None = None
    regex: str | None = attrs.field(default=None, validator=check_regexes)
    #: true: the header must be present; false: it must be absent.
    present: bool | None = None
    invert_match: bool = False


@attrs.frozen
class QueryParameterMatcher:
    """Matches one query parameter. Without `exact`/`regex`, presence is enough."""

    name: str
    exact: str | None = None
    regex: str | None = attrs.field(default=None, validator=check_regexes)
    present: bool | None = None


def _check_path_regex(instance: "RouteMatch", attribute: object, value: str | None) -> None:
    # Compiled as the route table will (case folding can grow the program).
    error = value and check_regex(value, ignore_case=not instance.case_sensitive)
    if error:
        raise ValueError(f"'regex' must be a valid RE2 regex: {error}")


@attrs.frozen
class RouteMatch:
    """A route's match: exactly one of `prefix`, `path`, `regex` or `connect_matcher`, plus
    optional conditions."""

    prefix: str | None = None
    path: str | None = None
    regex: str | None = attrs.field(default=None, validator=_check_path_regex)
    #: Matches CONNECT requests, which no other route matches (Envoy's connect_matcher);
    #: the gateway terminates them: it connects to a host of the route's cluster, answers
    #: 200 and carries the bytes both ways.
    connect_matcher: bool = False
    case_sensitive: bool = True
    #: Only gRPC requests (content-type application/grpc*) match.
    grpc: bool = False
    headers: list[HeaderMatcher] = attrs.Factory(list)
    query_parameters: list[QueryParameterMatcher] = attrs.Factory(list)


@attrs.frozen
class WeightedCluster:
    name: str
    weight: int = attrs.field(validator=between(0, UINT32_MAX))


#: The statuses a redirect answers with (Envoy's RedirectAction.RedirectResponseCode).
RedirectCode = Literal[301, 302, 303, 307, 308]


@attrs.frozen
class Redirect:
    """A redirect action: rewrites parts of the request URL into a Location header."""

    https_redirect: bool = False
    scheme_redirect: str | None = None
    host_redirect: str | None = None
    port_redirect: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(between(1, 65535))
    )
    path_redirect: str | None = None
    prefix_rewrite: str | None = None
    strip_query: bool = False
    response_code: RedirectCode = 301


@attrs.frozen
class DirectResponse:
    status: int = attrs.field(validator=between(200, 599))
    body: str = ""
    content_type: str = "text/plain"


@attrs.frozen
class FilterOverride:
    """A virtual host's or route's say on one listener filter: turn it off, or give it a
    config of its own (the filter type's keys, replacing the listener-level config)."""

    disabled: bool = False
    config: dict[str, Any] | None = None


_FIELD_NAME = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
#: A value either protocol can carry: no CR, LF or NUL (which would end a line early or be
#: refused), no whitespace around it (HTTP/2 peers refuse that).
_FIELD_VALUE = re.compile(r"(?:[^\s\x00](?:[^\S\r\n]*[^\s\x00])*)?")


def is_sendable_field(name: str, value: str) -> bool:
    """Whether a header either protocol can carry: a token for a name, a value as
    `_FIELD_VALUE` allows. For headers that come from outside at run time (an
    authorization service's answer), as the config's own are checked when loaded."""
    return bool(_FIELD_NAME.fullmatch(name) and _FIELD_VALUE.fullmatch(value))


def _check_field_names(
    instance: object, attribute: "attrs.Attribute[Any]", value: Iterable[str]
) -> None:
    for name in value:
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"'{attribute.name}': {name!r} is not a header name")


def _check_fields(
    instance: object, attribute: "attrs.Attribute[Any]", value: dict[str, str]
) -> None:
    _check_field_names(instance, attribute, value)
    for name, text in value.items():
        if not _FIELD_VALUE.fullmatch(text):
            raise ValueError(
                f"'{attribute.name}': the value of {name!r} holds a line break, a NUL or "
                "whitespace around it"
            )


@attrs.frozen(kw_only=True)
class HeaderMutations:
    """Headers to add (each replaces any same-named header) and to remove; removals first.

    Virtual hosts, routes and the `header_mutation` filter all take these four keys.
    """

    request_headers_to_add: dict[str, str] = attrs.field(factory=dict, validator=_check_fields)
    request_headers_to_remove: list[str] = attrs.field(factory=list, validator=_check_field_names)
    response_headers_to_add: dict[str, str] = attrs.field(factory=dict, validator=_check_fields)
    response_headers_to_remove: list[str] = attrs.field(factory=list, validator=_check_field_names)


@attrs.frozen
class RetryBackOff:
    """Exponential back-off between retries, with full jitter (Envoy's retry_back_off)."""

    base_interval: Duration = attrs.field(default=Duration(0.025), validator=at_least(MIN_PERIOD))
    #: Unset: ten times base_interval.
    max_interval: Duration | None = attrs.field(default=None, validator=at_least(MIN_PERIOD))


#: Envoy's retry_on conditions; the last five read the grpc-status of a gRPC response.
RetryOn = Literal[
    "5xx",
    "gateway-error",
    "connect-failure",
    "reset",
    "refused-stream",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
]


@attrs.frozen
class RetryPolicy:
    """`[virtual_hosts.NAME.routes.retry_policy]`: when and how often to try again."""

    retry_on: list[RetryOn]
    num_retries: int = attrs.field(default=1, validator=between(0, UINT32_MAX))
    #: Budget of one attempt (504 and flag UT if the last one runs out); "0s": the route
    #: timeout alone bounds the attempts.
    per_try_timeout: Duration = Duration(0.0)
    #: Upstream statuses that `retriable-status-codes` retries.
    retriable_status_codes: list[int] = attrs.field(
        factory=list, validator=attrs.validators.deep_iterable(between(100, 599))
    )
    retry_back_off: RetryBackOff = RetryBackOff()
    #: By default POST, PATCH and other non-idempotent requests are retried only when they
    #: cannot have reached the upstream (connect-failure, refused-stream); true lifts that.
    #: gRPC calls follow the gRPC conditions whatever their method.
    retry_non_idempotent: bool = False


@attrs.frozen
class HashPolicy:
    """One input of a route's hash (Envoy's route hash_policy): set exactly one source."""

    #: Hash the value of this request header.
    header: str | None = None
    #: Hash the value of this cookie.
    cookie: str | None = None
    #: Hash the downstream client's IP address.
    source_ip: bool = False
    #: If this policy yields a value, ignore the ones after it.
    terminal: bool = False


# Rate limit descriptors (Envoy's route RateLimit and its actions): what a route or virtual
# host tells the `ratelimit` filter to ask the rate limit service about.


@attrs.frozen
class RequestHeadersAction:
    """`request_headers`: the entry (descriptor_key, the header's value)."""

    header_name: str
    descriptor_key: str
    #: Without the header, leave the entry out (true) or the whole descriptor (false).
    skip_if_absent: bool = False


@attrs.frozen
class RemoteAddressAction:
    """`remote_address = {}`: the entry ("remote_address", the client's IP address)."""


@attrs.frozen
class GenericKeyAction:
    """`generic_key`: a fixed entry (descriptor_key, descriptor_value)."""

    descriptor_value: str
    descriptor_key: str = "generic_key"


@attrs.frozen
class HeaderValueMatchAction:
    """`header_value_match`: the entry (descriptor_key, descriptor_value) when the request
    matches every one of `headers` (or, with `expect_match = false`, does not)."""

    descriptor_value: str
    headers: list[HeaderMatcher]
    descriptor_key: str = "header_match"
    expect_match: bool = True


@attrs.frozen
class DestinationClusterAction:
    """`destination_cluster = {}`: the entry ("destination_cluster", the route's cluster)."""


@attrs.frozen
class SourceClusterAction:
    """`source_cluster = {}`: the entry ("source_cluster", `[dynamic.node] cluster`, this
    gateway's service cluster)."""


#: An action's kinds, in the order the docs list them; each action sets exactly one.
RATE_LIMIT_ACTIONS = (
    "request_headers",
    "remote_address",
    "generic_key",
    "header_value_match",
    "destination_cluster",
    "source_cluster",
)


@attrs.frozen
class RateLimitAction:
    """One of a rate limit's `actions`: one descriptor entry (set exactly one kind)."""

    request_headers: RequestHeadersAction | None = None
    remote_address: RemoteAddressAction | None = None
    generic_key: GenericKeyAction | None = None
    header_value_match: HeaderValueMatchAction | None = None
    destination_cluster: DestinationClusterAction | None = None
    source_cluster: SourceClusterAction | None = None


#: Envoy's bound on a rate limit's `stage` (and the ratelimit filter's).
MAX_RATE_LIMIT_STAGE = 10


@attrs.frozen
class RateLimit:
    """`rate_limits` of a route or virtual host: one descriptor, made of its actions'
    entries in order, for the `ratelimit` filters whose `stage` is this one's."""

    actions: list[RateLimitAction]
    stage: int = attrs.field(default=0, validator=between(0, MAX_RATE_LIMIT_STAGE))


@attrs.frozen
class Route(HeaderMutations):
    """`[[virtual_hosts.NAME.routes]]`: a match and one action.

    Actions (exactly one): `cluster`, `weighted_clusters`, `redirect`, `direct_response`.
    """

    match: RouteMatch
    cluster: str | None = None
    weighted_clusters: list[WeightedCluster] | None = None
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    #: Whole upstream exchange budget (504 and flag UT when exceeded); "0s" disables it.
    timeout: Duration = Duration(15.0)
    #: Caps a gRPC client's grpc-timeout; the upstream deadline is the smallest of the
    #: route timeout, grpc-timeout and this.
    max_grpc_timeout: Duration | None = None
    prefix_rewrite: str | None = None
    host_rewrite: str | None = None
    #: Per-filter overrides by `[http_filters.NAME]` name (win over the virtual host's).
    http_filters: dict[str, FilterOverride] = attrs.Factory(dict)
    #: Upgrades this route allows; unset: the listener's `upgrade` list applies.
    upgrade: list[Literal["websocket"]] | None = None
    #: A tunnel with no bytes either way for this long is closed.
    tunnel_idle_timeout: Duration = Duration(3600.0)
    #: A tunnel is closed after this long whatever it does ("0s": no limit).
    tunnel_max_duration: Duration = Duration(0.0)
    #: Retries of failed attempts (Envoy's retry_policy); unset: no retries.
    retry_policy: RetryPolicy | None = None
    #: What ring_hash and maglev clusters hash on; the values of all policies combine.
    hash_policy: list[HashPolicy] = attrs.Factory(list)
    #: Request body bytes the router keeps so that a retry can resend them; a request
    #: whose body grows past this is not retried (it streams on, unbuffered).
    per_request_buffer_limit_bytes: int = attrs.field(
        default=1 << 20, validator=between(0, UINT32_MAX)
    )
    #: Descriptors for the `ratelimit` filter; unset: the virtual host's `rate_limits`.
    rate_limits: list[RateLimit] = attrs.Factory(list)


@attrs.frozen
class VirtualHost(HeaderMutations):
    """`[virtual_hosts.NAME]`: domains (exact, `*.suffix`, `prefix*`, `*`) and ordered routes."""

    domains: list[str]
    routes: list[Route] = attrs.Factory(list)
    #: Per-filter overrides for every route of this virtual host.
    http_filters: dict[str, FilterOverride] = attrs.Factory(dict)
    #: Descriptors for the `ratelimit` filter, for the routes without `rate_limits`.
    rate_limits: list[RateLimit] = attrs.Factory(list)


# --- clusters -------------------------------------------------------------------------------


@attrs.frozen
class Endpoint:
    """One upstream endpoint: written "host:port", or `{ address = "host:port", weight = 3 }`."""

    address: Address
    #: Share of traffic relative to the cluster's other endpoints (1-128, as Envoy).
    weight: int = attrs.field(default=1, validator=between(1, 128))


#: Hosts least_request samples per pick: each request pays for every one of them.
MAX_CHOICE_COUNT = 100
#: Ring hash points and Maglev slots. Envoy allows 8,388,608 and 5,000,011, but here a
#: table is built in Python on the worker's event loop, whenever a host's health changes:
#: 65,537 Maglev slots take ~85 ms and 65,536 ring points ~230 ms; 5,000,011 slots would
#: stop the worker for ~20 s each time.
MAX_RING_SIZE = 1 << 16
MAX_MAGLEV_TABLE_SIZE = 65537


@attrs.frozen
class LeastRequestLbConfig:
    """`[clusters.NAME.least_request]`."""

    #: Hosts sampled per pick; the one with the fewest active requests (per weight) wins.
    choice_count: int = attrs.field(default=2, validator=between(2, MAX_CHOICE_COUNT))


@attrs.frozen
class RingHashLbConfig:
    """`[clusters.NAME.ring_hash]`: the ring has at least this many points in total."""

    minimum_ring_size: int = attrs.field(default=1024, validator=between(1, MAX_RING_SIZE))
    maximum_ring_size: int = attrs.field(default=MAX_RING_SIZE, validator=between(1, MAX_RING_SIZE))


@attrs.frozen
class MaglevLbConfig:
    """`[clusters.NAME.maglev]`: the lookup table size, a prime (Envoy's default 65537)."""

    table_size: int = attrs.field(default=65537, validator=between(7, MAX_MAGLEV_TABLE_SIZE))


@attrs.frozen
class HealthCheck:
    """`[[clusters.NAME.health_checks]]`: an active check each host must pass.

    `type` picks the check; `path`, `host` and `expected_statuses` belong to "http",
    `send` and `expect` to "tcp", `service_name` and `authority` to "grpc".
    """

    type: Literal["http", "tcp", "grpc"]
    interval: Duration = attrs.field(default=Duration(5.0), validator=at_least(MIN_PERIOD))
    #: Up to this much random time is added to each interval, so checks spread out.
    interval_jitter: Duration = Duration(0.0)
    timeout: Duration = attrs.field(default=Duration(1.0), validator=at_least(MIN_PERIOD))
    #: Failures in a row that mark a healthy host unhealthy.
    unhealthy_threshold: int = attrs.field(default=3, validator=between(1, UINT32_MAX))
    #: Successes in a row that mark an unhealthy host healthy (at start-up one is enough).
    healthy_threshold: int = attrs.field(default=2, validator=between(1, UINT32_MAX))
    path: str | None = None
    host: str | None = None
    expected_statuses: list[int] | None = None
    #: Bytes (as text) written after connecting; `expect` must then appear in the reply.
    send: str | None = None
    expect: str | None = None
    #: grpc.health.v1 service name ("" asks about the server as a whole).
    service_name: str | None = None
    authority: str | None = None


@attrs.frozen
class OutlierDetection:
    """`[clusters.NAME.outlier_detection]`: passive health, from real responses.

    A host with `consecutive_5xx` 5xx responses in a row (connect failures, resets and
    timeouts count as 5xx), or `consecutive_gateway_failure` 502/503/504 or local errors in
    a row, is ejected for base_ejection_time times the number of times it has been ejected
    (capped at max_ejection_time), unless max_ejection_percent of the hosts are out already.
    The `enforcing_*` percentages are the chance that a detection really ejects.
    """

    consecutive_5xx: int = attrs.field(default=5, validator=between(1, UINT32_MAX))
    consecutive_gateway_failure: int = attrs.field(default=5, validator=between(1, UINT32_MAX))
    enforcing_consecutive_5xx: int = attrs.field(default=100, validator=between(0, 100))
    enforcing_consecutive_gateway_failure: int = attrs.field(default=0, validator=between(0, 100))
    #: How often ejections are reviewed (hosts return, ejection multipliers shrink).
    interval: Duration = attrs.field(default=Duration(10.0), validator=at_least(MIN_PERIOD))
    base_ejection_time: Duration = attrs.field(
        default=Duration(30.0), validator=at_least(MIN_PERIOD)
    )
    max_ejection_time: Duration = Duration(300.0)
    max_ejection_percent: int = attrs.field(default=10, validator=between(0, 100))


@attrs.frozen
class CircuitBreakers:
    """`[clusters.NAME.circuit_breakers]`: the cluster's limits (Envoy's default priority
    thresholds). Over one, a request gets 503 with flag UO at once, never a queue."""

    #: Open upstream connections across all hosts; a request that would need one more
    #: waits (as a pending request) for a pooled one instead.
    max_connections: int = attrs.field(default=1024, validator=between(1, UINT32_MAX))
    #: Requests waiting for a connection or stream.
    max_pending_requests: int = attrs.field(default=1024, validator=between(0, UINT32_MAX))
    #: Requests in flight to the cluster.
    max_requests: int = attrs.field(default=1024, validator=between(1, UINT32_MAX))
    #: Retries in flight to the cluster.
    max_retries: int = attrs.field(default=3, validator=between(0, UINT32_MAX))


@attrs.frozen
class Cluster:
    """`[clusters.NAME]`: upstream endpoints and how to find, pick and talk to them."""

    endpoints: list[Endpoint]
    #: "static": endpoints are addresses. "strict_dns": each endpoint's name is resolved
    #: every dns_refresh_rate and every address is a host. "logical_dns": one host per
    #: endpoint, connecting to the name's latest first address. "eds": the hosts come
    #: from ClusterLoadAssignment resources (`[dynamic]`), changing without a reload.
    type: Literal["static", "strict_dns", "logical_dns", "eds"] = "static"
    dns_refresh_rate: Duration = attrs.field(default=Duration(5.0), validator=at_least(MIN_PERIOD))
    connect_timeout: Duration = attrs.field(default=Duration(5.0), validator=at_least(MIN_PERIOD))
    #: "http1", or "http2" (h2c prior knowledge): requests then borrow streams, not
    #: connections. gRPC upstreams need "http2".
    protocol: Literal["http1", "http2"] = "http1"
    #: What parses the HTTP/1.1 responses of this cluster's hosts: "llhttp" or "h11".
    http1_parser: Literal["llhttp", "h11"] = "llhttp"
    lb_policy: Literal["round_robin", "least_request", "random", "ring_hash", "maglev"] = (
        "round_robin"
    )
    least_request: LeastRequestLbConfig = LeastRequestLbConfig()
    ring_hash: RingHashLbConfig = RingHashLbConfig()
    maglev: MaglevLbConfig = MaglevLbConfig()
    #: Below this percentage of healthy hosts, the load balancer uses all hosts (Envoy's
    #: healthy_panic_threshold); 0 disables panic mode.
    healthy_panic_threshold: float = attrs.field(default=50.0, validator=between(0, 100))
    health_checks: list[HealthCheck] = attrs.Factory(list)
    outlier_detection: OutlierDetection | None = None
    circuit_breakers: CircuitBreakers = CircuitBreakers()
    #: Each endpoint has its own pool; this caps its open connections.
    max_connections_per_host: int = attrs.field(default=1024, validator=between(1, UINT32_MAX))
    #: How long a request waits for a pooled connection when the pool is full (503, flag UO).
    pool_timeout: Duration = Duration(5.0)
    #: An idle pooled connection is closed after this long.
    idle_timeout: Duration = Duration(60.0)
    #: Upstream response head limit in KiB (502 above it).
    max_response_headers_kb: int = attrs.field(default=60, validator=between(1, MAX_HEADERS_KB))
    http2: Http2ProtocolOptions = Http2ProtocolOptions()
    #: TLS to the endpoints; unset: cleartext.
    tls: UpstreamTlsContext | None = None
    #: Open each upstream connection with a PROXY protocol header carrying the client's
    #: address (tcp_proxy only: pooled HTTP connections serve many clients).
    proxy_protocol: Literal["v1", "v2"] | None = None


# --- the whole file -------------------------------------------------------------------------


@attrs.frozen
class RestApiConfigSource:
    """`[dynamic.rest]`: a control plane polled with Envoy's REST-JSON xDS protocol
    (`POST /v3/discovery:clusters` ..., Envoy's api_config_source with api_type REST)."""

    #: A `[clusters.*]` table of this file: where the control plane is.
    cluster: str
    #: How often each resource type is asked for.
    refresh_delay: Duration = attrs.field(default=Duration(1.0), validator=at_least(MIN_PERIOD))
    request_timeout: Duration = attrs.field(default=Duration(1.0), validator=at_least(MIN_PERIOD))


@attrs.frozen
class AdsConfigSource:
    """`[dynamic.ads]`: one gRPC stream (Envoy's ADS) to a control plane for every
    resource type; state of the world, or incremental with `delta`."""

    #: A `[clusters.*]` table of this file with `protocol = "http2"`.
    cluster: str
    #: Incremental xDS (DeltaAggregatedResources): the control plane sends only what
    #: changed and what was removed, instead of every resource of a type each time.
    delta: bool = False


@attrs.frozen
class XdsNode:
    """`[dynamic.node]`: who this gateway is, in discovery requests (Envoy's Node)."""

    id: str = "gateway"
    #: The service cluster this instance belongs to (control planes match on it).
    cluster: str = "gateway"


@attrs.frozen
class Dynamic:
    """`[dynamic]`: resources from outside the file, in Envoy's v3 xDS shapes: set one of
    `path`, `rest`, `ads`. The resources are added to this file's own tables."""

    #: A directory of Envoy v3 resources (Listener, RouteConfiguration, Cluster,
    #: ClusterLoadAssignment) in YAML or JSON, watched for changes (Envoy's path config
    #: source).
    path: str | None = None
    rest: RestApiConfigSource | None = None
    ads: AdsConfigSource | None = None
    node: XdsNode = XdsNode()


@attrs.frozen
class Tracing:
    """`[tracing]`: spans of each sampled request, exported over OTLP to a collector
    (Envoy's OpenTelemetry tracer). Unset: no spans, and a client's `traceparent` only
    gets the gateway's span id on its way."""

    #: A `[clusters.*]` table of this file: where the collector (an OpenTelemetry
    #: Collector, Jaeger, Tempo, ...) listens for OTLP. It must be http2 for "grpc".
    collector_cluster: str
    #: "http": OTLP/HTTP, protobuf bodies POSTed to `path`; "grpc": the OTLP gRPC service
    #: (opentelemetry.proto.collector.trace.v1.TraceService/Export).
    protocol: Literal["http", "grpc"] = "http"
    #: The `service.name` resource attribute of every span.
    service_name: str = "gateway"
    #: Percentage (0 to 100, as Envoy's random_sampling) of the requests that carry no
    #: sampling decision which are traced. A request whose caller decided (traceparent's
    #: sampled flag, B3) follows its caller; one with `x-client-trace-id` is always traced.
    sampling: float = attrs.field(default=100.0, validator=between(0, 100))
    #: OTLP/HTTP's path on the collector.
    path: str = "/v1/traces"
    #: Extra headers on each export (HTTP headers, or gRPC metadata): a collector's token.
    headers: dict[str, str] = attrs.field(factory=dict, validator=_check_fields)
    #: Exports leave at least this often while spans wait (Envoy: flush_interval_ms).
    flush_interval: Duration = attrs.field(default=Duration(5.0), validator=at_least(MIN_PERIOD))
    #: ...or as soon as this many spans wait (Envoy: min_flush_spans, whose default is 5;
    #: here an export is a Python HTTP exchange, about as dear as a proxied request, so
    #: exports are batched as OpenTelemetry's SDK batches them).
    min_flush_spans: int = attrs.field(default=256, validator=between(1, UINT32_MAX))
    #: Spans waiting for export at most; more are dropped and counted (Envoy:
    #: max_cache_size; OpenTelemetry's max_queue_size), so a slow or absent collector
    #: costs requests nothing.
    max_cache_size: int = attrs.field(default=2048, validator=between(1, 1 << 20))
    #: Spans in one export request at most (OpenTelemetry's max_export_batch_size).
    max_export_batch_size: int = attrs.field(default=512, validator=between(1, 1 << 20))
    #: One export's budget; an export that runs out fails and its spans are dropped.
    timeout: Duration = attrs.field(default=Duration(5.0), validator=at_least(MIN_PERIOD))


@attrs.frozen
class GatewayConfig:
    """The whole gateway.toml."""

    admin: Admin | None = None
    server: Server = Server()
    listeners: dict[str, Listener] = attrs.Factory(dict)
    http_filters: dict[str, HttpFilter] = attrs.Factory(dict)
    virtual_hosts: dict[str, VirtualHost] = attrs.Factory(dict)
    clusters: dict[str, Cluster] = attrs.Factory(dict)
    dynamic: Dynamic = Dynamic()
    overload: Overload = Overload()
    stats_sinks: list[StatsSink] = attrs.Factory(list)
    tracing: Tracing | None = None
