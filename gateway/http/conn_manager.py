"""The HTTP connection manager (HCM): the network filter that speaks HTTP to clients.

One `HttpConnectionManager` per listener holds what every connection shares: the route
table, the filter factories, the router, stats and the drain flag. For each connection it
picks the codec (HTTP/2 when the client opens with the HTTP/2 connection preface, h2c prior
knowledge; else HTTP/1.1; or what the listener's `codec` forces) and runs
`Http1Connection` (conn_h1.py) or `Http2Connection` (conn_h2.py). Both turn each request
into an ActiveStream, run it in a task of its own through `run_stream`, and act as that
stream's ResponseEncoder, so filters and the router are the same for both codecs.
"""

import logging
import math
import random

import trio

from gateway.clusters.manager import ClusterManager
from gateway.config.load import structure_filter_config
from gateway.config.model import (
    GatewayConfig,
    HttpConnectionManagerConfig,
    HttpConnectionManagerOptions,
)
from gateway.errors import DownstreamDisconnect, StreamCancelled, StreamIdleTimeout
from gateway.http.active_stream import ActiveStream, BodyItem, ResponseEncoder
from gateway.http.conn_h1 import Http1Connection
from gateway.http.conn_h2 import Http2Connection
from gateway.http.conn_h3 import Http3Connection
from gateway.http.connection import DownstreamConnection
from gateway.http.filter import FilterContext, HttpFilterFactory
from gateway.http.filters import FILTER_TYPES
from gateway.http.hcm_stats import HcmStats, RouteStats
from gateway.io.byte_stream import ByteStream
from gateway.io.trio_util import close_after_linger, receive_or_eof
from gateway.listeners.network_filter import ConnectionInfo
from gateway.observability.access_log import AccessLogger
from gateway.observability.access_log_format import escape
from gateway.observability.stats import StatsStore
from gateway.observability.stream_info import StreamInfo
from gateway.observability.task_query import hide_query
from gateway.observability.tasktree import annotate
from gateway.observability.tracing.tracer import Tracer, end_request
from gateway.protocol.events import RequestHeaders
from gateway.protocol.headers import LocalReply, RequestHead, strip_hop_by_hop
from gateway.protocol.path_normalization import InvalidPath, NormalizedPath, normalize
from gateway.protocol.trace_context import format_traceparent, new_span_id, parse_traceparent
from gateway.router.route_table import RouteEntry, RouteTable, RouteTables
from gateway.router.router import RouterFilter
from gateway.server.state import ServerState

log = logging.getLogger("gateway.http")

#: What an HTTP/2 client sends first (RFC 9113 3.4); its absence means HTTP/1.1.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class HttpConnectionManager:
    """Per-listener HCM state: route table, filter factories, router, stats, drain flag."""

    def __init__(
        self,
        name: str,
        listener: HttpConnectionManagerConfig,
        config: GatewayConfig,
        clusters: ClusterManager,
        store: StatsStore,
        access_logs: list[AccessLogger],
        server: ServerState,
        route_tables: RouteTables,
    ) -> None:
        self.name = name
        self.config = listener
        self.clusters = clusters
        self._store = store
        self._server = server
        self.stats = HcmStats.create(
            store.scope(f"http.{name}", "http", {"envoy_http_conn_manager_prefix": name})
        )
        self._tracer = server.tracer
        self.router = RouterFilter(clusters, listener, self.stats)
        self.access_logs = access_logs
        self.update_routes(config, route_tables)
        self.drain_grace = config.server.drain_grace
        #: Where the QUIC listeners are bound, for `advertise_http3`.
        self._http3_ports = server.http3_ports
        #: Overload actions the streams and codecs check (gateway/overload.py).
        self.stop_accepting_requests = server.overload.stop_accepting_requests
        self.disable_http_keepalive = server.overload.disable_http_keepalive
        self.draining = False
        #: Until when draining connections still take requests on their way (inf: not
        #: draining).
        self.drain_grace_deadline = math.inf
        #: Cancel scopes of connections whose first bytes are awaited.
        self._sniffing: set[trio.CancelScope] = set()
        self._connections: set[DownstreamConnection] = set()
        #: Whether `gateway.http` logs at debug level: looked up once per connection, so
        #: the streams' lines cost one attribute test when it is off. A level changed by
        #: POST /logging applies from the next connection.
        self.debug = False

    def update_routes(self, config: GatewayConfig, route_tables: RouteTables) -> None:
        """Takes the route table and HTTP filters of `config` (Envoy's RDS update): the
        next request on every connection, old or new, uses them; a request already
        routed keeps its route. `route_tables` may hold the table, built already."""
        names = self.config.virtual_hosts
        table = route_tables.get(tuple(names))
        self.route_table = table if table is not None else RouteTable(names, config)
        self._filter_factories, self._filter_names = self._build_filter_factories(
            config, self._store, self._server
        )
        self.route_stats = (
            {e.name: RouteStats.create(self._store, e.name) for e in self.route_table.entries()}
            if self.config.per_route_stats
            else {}
        )

    def _build_filter_factories(
        self, config: GatewayConfig, store: StatsStore, server: ServerState
    ) -> tuple[dict[str | None, list[HttpFilterFactory]], dict[str | None, list[str]]]:
        """The filter chain for each route (key: route name; None when no route matched):
        the listener's filters, minus those a route or its virtual host disables, with the
        config a route or virtual host overrides. A filter type built per route gets its
        factory made for each route, and is left out where it says it has nothing to do.
        And the names of the filters in each chain, for /explain and the filters' spans.
        Built once, at start."""

        def factory(
            name: str, filter_config: object, route: RouteEntry | None
        ) -> HttpFilterFactory | None:
            filter_type = FILTER_TYPES[config.http_filters[name].type]
            scope = store.scope(
                f"http.{self.name}.{name}",
                "http_filter",
                {"envoy_http_conn_manager_prefix": self.name, "envoy_http_filter_name": name},
            )
            context = FilterContext(
                name, scope, server, self.clusters, route, config.dynamic.node.cluster
            )
            return filter_type.create_factory(filter_config, context)

        names = self.config.http_filters
        per_route = {n for n in names if FILTER_TYPES[config.http_filters[n].type].per_route}
        base = {name: factory(name, config.http_filters[name].config, None) for name in names}
        chains: dict[str | None, list[HttpFilterFactory]] = {
            None: [f for f in base.values() if f is not None]
        }
        chain_names: dict[str | None, list[str]] = {None: [n for n in names if base[n]]}
        for entry in self.route_table.entries():
            chain = []
            chain_names[entry.name] = []
            for name in names:
                found = entry.filter_override(name)
                override = found[0] if found is not None else None
                made: HttpFilterFactory | None
                if override is None:
                    own = config.http_filters[name].config
                    made = factory(name, own, entry) if name in per_route else base[name]
                elif override.disabled:
                    made = None
                else:
                    assert override.config is not None
                    filter_type = config.http_filters[name].type
                    made = factory(
                        name, structure_filter_config(filter_type, override.config), entry
                    )
                if made is not None:
                    chain.append(made)
                    chain_names[entry.name].append(name)
            chains[entry.name] = chain
        return chains, chain_names

    @property
    def alt_svc(self) -> str | None:
        """The `alt-svc` value that advertises HTTP/3 (`advertise_http3`), once the QUIC
        listener it names is bound."""
        target = self.config.advertise_http3
        port = self._http3_ports.get(target) if target is not None else None
        return None if port is None else f'h3=":{port}"; ma=86400'

    def filters_for(self, route: RouteEntry | None) -> list[HttpFilterFactory]:
        return self._filter_factories[route.name if route is not None else None]

    def filter_names_for(self, route: RouteEntry | None) -> list[str]:
        """The `[http_filters.*]` names in `filters_for(route)`, in order (for /explain and
        the filters' spans)."""
        return self._filter_names[route.name if route is not None else None]

    async def handle_connection(self, stream: ByteStream, conn_info: ConnectionInfo) -> None:
        alpn = conn_info.tls.alpn if conn_info.tls is not None else None
        # ALPN settled the protocol during the TLS handshake; without it, sniff the preface.
        negotiated = alpn in ("h2", "http/1.1")
        initial = b"" if negotiated else await self._sniff(stream)
        if initial is None:
            return
        conn: DownstreamConnection
        if alpn == "h2" or (
            not negotiated
            and (
                self.config.codec == "http2"
                or (self.config.codec == "auto" and initial.startswith(H2_PREFACE))
            )
        ):
            self.stats.downstream_cx_http2_total.inc()
            conn = Http2Connection(self, stream, conn_info, initial)
        else:
            self.stats.downstream_cx_http1_total.inc()
            conn = Http1Connection(self, stream, conn_info, initial)
        await self._serve(conn, conn_info, alpn)
        await close_after_linger(stream, self.config.delayed_close_timeout)

    async def handle_http3_connection(self, conn: Http3Connection) -> None:
        """Runs a QUIC connection's HTTP/3 (the QUIC listener made it)."""
        self.stats.downstream_cx_http3_total.inc()
        await self._serve(conn, conn.conn_info, "h3")

    async def _serve(
        self, conn: DownstreamConnection, conn_info: ConnectionInfo, alpn: str | None
    ) -> None:
        """A connection's life as the HCM sees it: /tasks, stats, debug lines."""
        peer = conn_info.peer
        scope = trio.CancelScope()
        annotate(
            "connection", live=conn.task_fields, cancel_scope=scope, peer=peer, listener=self.name
        )
        self._connections.add(conn)
        self.stats.downstream_cx_total.inc()
        self.stats.downstream_cx_active.inc()
        debug = self.debug = log.isEnabledFor(logging.DEBUG)
        if debug:
            started = trio.current_time()
            fields = conn.task_fields()
            log.debug(
                "connection from %s accepted on %s: %s%s",
                peer,
                self.name,
                fields["protocol"],
                f" over TLS (SNI {conn_info.server_name or '-'}, ALPN {alpn or '-'})"
                if conn_info.tls is not None
                else "",
            )
        try:
            with scope:
                await conn.run()
        finally:
            self._connections.discard(conn)
            self.stats.downstream_cx_active.dec()
            if scope.cancel_called:
                self.stats.downstream_cx_admin_cancel.inc()
                log.warning("connection %s on %s cancelled by the operator", peer, self.name)
            if debug:
                fields = conn.task_fields()
                log.debug(
                    "connection from %s closed after %.3fs: %s, %s requests, %s bytes in, "
                    "%s bytes out",
                    peer,
                    trio.current_time() - started,
                    fields["protocol"],
                    fields["requests"],
                    fields["bytes_received"],
                    fields["bytes_sent"],
                )

    async def _sniff(self, stream: ByteStream) -> bytes | None:
        """The first bytes, enough to tell the HTTP/2 preface from an HTTP/1.1 request;
        None if the client sent nothing within the idle timeout."""
        if self.config.codec != "auto":
            return b""
        data = b""
        deadline = trio.current_time() + self.config.idle_timeout
        # A drain gives a client that has said nothing yet only the drain grace.
        with trio.CancelScope(deadline=min(deadline, self.drain_grace_deadline)) as scope:
            self._sniffing.add(scope)
            try:
                while len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
                    chunk = await receive_or_eof(stream)
                    if not chunk:
                        return None
                    data += chunk
                return data
            finally:
                self._sniffing.discard(scope)
        if self.draining:
            self.stats.downstream_cx_drain_close.inc()
        else:
            self.stats.downstream_cx_idle_timeout.inc()
        return None

    def new_stream(
        self,
        encoder: ResponseEncoder,
        event: RequestHeaders,
        conn_info: ConnectionInfo,
        body: trio.MemoryReceiveChannel[BodyItem] | None,
    ) -> ActiveStream:
        """An ActiveStream for a request head: edge headers, stream info, filters."""
        head = event.head
        peer = conn_info.peer
        # Filters, routes and the access log see the path the upstream will get.
        early_reply = self._normalize_path(head) if head.path.startswith("/") else None
        info = StreamInfo(
            stream_id=event.stream_id,
            downstream_remote=peer,
            downstream_local=conn_info.destination,
            requested_server_name=conn_info.server_name or "-",
            downstream_peer_subject=(conn_info.tls and conn_info.tls.peer_subject) or "-",
            protocol="HTTP/2" if head.http_version == "2" else f"HTTP/{head.http_version}",
            method=head.method,
            path=head.path,
            authority=head.authority or "-",
        )
        mutate_request_headers(head, info, peer.rpartition(":")[0].strip("[]"), self._tracer)
        self.stats.downstream_rq_total.inc()
        stream = ActiveStream(self, encoder, head, info, body)
        stream.early_reply = early_reply
        return stream

    def _normalize_path(self, head: RequestHead) -> LocalReply | None:
        """Normalises the request's path in place (an origin-form one: not CONNECT's
        authority, nor `*`); a reply if the request must not go on."""
        try:
            normalized = normalize_request_path(self.config, head.path)
        except InvalidPath as exc:
            self.stats.downstream_rq_failed_path_normalization.inc()
            return LocalReply(400, str(exc), response_flag="DPE")
        head.path = normalized.path
        if normalized.redirect:
            self.stats.downstream_rq_redirected_with_normalized_path.inc()
            # gRPC clients do not follow redirects: INTERNAL, as Envoy answers them.
            return LocalReply(307, "", {"location": normalized.path}, grpc_status=13)
        return None

    async def run_stream(self, stream: ActiveStream, scope: trio.CancelScope) -> None:
        """The body of a stream task: annotate it for /tasks, then filters and router, in
        `scope`, the connection's handle on the stream (a client reset cancels it); the
        operator's cancel from /tasks cancels it too, through an OperatorCancel."""
        info = stream.info
        operator = OperatorCancel(scope)
        annotate(
            "stream",
            live=lambda: {
                "state": info.state,
                "route": info.route_name,
                "cluster": info.cluster_name,
                "upstream_host": info.upstream_host,
                "bytes_received": info.bytes_received,
                "bytes_sent": info.bytes_sent,
            },
            cancel_scope=operator,
            peer=info.downstream_remote,
            listener=self.name,
            method=info.method,
            path=info.path,
        )
        self.stats.downstream_rq_active.inc()
        if self.debug:
            log.debug(
                "stream %s from %s started: %s %s %s (authority %s)",
                info.stream_id,
                info.downstream_remote,
                escape(info.method),
                escape(hide_query(info.path)),
                info.protocol,
                escape(info.authority),
            )
        if idle_timeout := self.config.stream_idle_timeout:
            stream.watch_idle(scope, idle_timeout)
        try:
            with scope:
                await stream.run(self.router)
            if scope.cancelled_caught and trio.current_time() >= scope.deadline:
                self.stats.downstream_rq_idle_timeout.inc()
                try:
                    await stream.fail(StreamIdleTimeout())
                except DownstreamDisconnect:
                    info.add_flag("DC")
            elif operator.called:
                self.stats.downstream_rq_admin_cancel.inc()
                log.warning(
                    "stream %s %s %s from %s cancelled by the operator",
                    info.stream_id,
                    escape(info.method),
                    escape(info.path),
                    info.downstream_remote,
                )
                try:
                    await stream.fail(StreamCancelled())
                except DownstreamDisconnect:
                    info.add_flag("DC")
        finally:
            self.stats.downstream_rq_active.dec()

    def drain(self) -> None:
        """New responses carry Connection: close; idle HTTP/1.1 connections close after the
        drain grace; HTTP/2 connections shut down gracefully (double GOAWAY)."""
        if self.draining:
            return
        self.draining = True
        self.drain_grace_deadline = trio.current_time() + self.drain_grace
        for conn in list(self._connections):
            conn.drain()
        for scope in self._sniffing:
            scope.deadline = min(scope.deadline, self.drain_grace_deadline)

    def finish(self, info: StreamInfo) -> None:
        if self.debug:
            log.debug(
                "stream %s from %s ended: %s %s -> %s in %d ms, route %s, cluster %s, "
                "upstream host %s, flags %s, %d bytes in, %d bytes out",
                info.stream_id,
                info.downstream_remote,
                escape(info.method),
                escape(hide_query(info.path)),
                info.response_code or "no response",
                info.duration_ms(),
                info.route_name,
                info.cluster_name,
                info.upstream_host,
                info.flags_text,
                info.bytes_received,
                info.bytes_sent,
            )
        if info.span is not None:
            end_request(info)
        self.stats.record(info)
        if self.route_stats and (route := self.route_stats.get(info.route_name)) is not None:
            route.record(info)
        for access_log in self.access_logs:
            access_log.log(info)


class OperatorCancel:
    """A stream's cancel handle for /tasks/ID/cancel: one scope serves the connection (client
    resets) and the operator, and this remembers which of them cancelled."""

    __slots__ = ("called", "scope")

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.called = False

    def cancel(self) -> None:
        self.called = True
        self.scope.cancel()


def normalize_request_path(config: HttpConnectionManagerOptions, path: str) -> NormalizedPath:
    """The path as the listener's normalisation settings make it (Envoy's
    maybeNormalizePath); InvalidPath (400) if it cannot be."""
    return normalize(
        path,
        normalize_path=config.normalize_path,
        merge_slashes=config.merge_slashes,
        escaped_slashes=config.path_with_escaped_slashes_action,
    )


def mutate_request_headers(
    head: RequestHead, info: StreamInfo, peer_ip: str, tracer: Tracer | None = None
) -> None:
    """What the HCM does to every request's headers where it enters, before the filters
    and the route match (Envoy's mutateRequestHeaders). Hop-by-hop headers go first, before
    the gateway adds its own: `Connection: x-forwarded-for` must not remove the
    x-forwarded-for made here, nor a header a filter sets. With `tracer`, the request
    starts its span (and gets the trace headers the tracer sends)."""
    strip_hop_by_hop(head.headers)
    _edge_headers(head, info, peer_ip)
    if tracer is None:
        _propagate_trace(head, info)
    else:
        tracer.start_request(head, info)


def _propagate_trace(head: RequestHead, info: StreamInfo) -> None:
    """Without `[tracing]`: passes a W3C trace the client started on, with a span id of
    our own, as every hop must. A request without a valid `traceparent` starts none (the
    gateway records no spans, and Envoy adds none unless tracing is configured): a made-up
    trace on every request cost each upstream request a header of fresh random values. An
    invalid one passes as it came."""
    value = head.headers.get("traceparent")
    if value is None:
        return
    parsed = parse_traceparent(value)
    if parsed is not None:
        trace_id, _, flags = parsed
        head.headers.set("traceparent", format_traceparent(trace_id, new_span_id(), flags))
        info.trace_id = trace_id


_UUID4_BITS = 0x4000_8000 << 48  # version 4, RFC 4122 variant
_UUID4_MASK = ~(0xF000_C000 << 48)


def _new_request_id() -> str:
    """A random (version 4) UUID, as uuid.uuid4() makes, without its os.urandom call per
    request: a request id needs to be unique, not unguessable."""
    h = f"{random.getrandbits(128) & _UUID4_MASK | _UUID4_BITS:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _edge_headers(head: RequestHead, info: StreamInfo, peer_ip: str) -> None:
    """x-forwarded-for (append the peer), x-forwarded-proto, x-request-id (keep or make)."""
    headers = head.headers
    prior = ", ".join(headers.get_all("x-forwarded-for"))
    xff = f"{prior}, {peer_ip}" if prior else peer_ip
    headers.set("x-forwarded-for", xff)
    headers.set("x-forwarded-proto", head.scheme)
    request_id = headers.get("x-request-id")
    if not request_id:
        request_id = _new_request_id()
        headers.set("x-request-id", request_id)
    info.request_id = request_id
    info.forwarded_for = xff
    info.user_agent = headers.get("user-agent") or "-"
