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
import uuid
from typing import Protocol

import attrs
import trio

from gateway.access_log import AccessLogger
from gateway.clusters.manager import ClusterManager
from gateway.config.load import structure_filter_config
from gateway.config.model import GatewayConfig
from gateway.config.model import Listener as ListenerConfig
from gateway.http.active_stream import ActiveStream, BodyItem, ResponseEncoder
from gateway.http.events import RequestHeaders
from gateway.http.filter import FilterContext, HttpFilterFactory
from gateway.http.filters import FILTER_TYPES
from gateway.http.headers import RequestHead
from gateway.http.route_table import RouteEntry, RouteTable
from gateway.http.router import RouterFilter
from gateway.http.stream_info import StreamInfo
from gateway.server_state import ServerState
from gateway.stats import Counter, Gauge, Histogram, Scope, StatsStore, create_stats
from gateway.tasktree import annotate

log = logging.getLogger("gateway.http")

#: What an HTTP/2 client sends first (RFC 9113 3.4); its absence means HTTP/1.1.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class DownstreamConnection(Protocol):
    async def run(self) -> None: ...

    def drain(self) -> None:
        """Stop taking new requests (HTTP/1.1: close when idle; HTTP/2: GOAWAY)."""

    def task_fields(self) -> dict[str, object]: ...


@attrs.define
class HcmStats:
    downstream_cx_total: Counter
    downstream_cx_active: Gauge
    downstream_cx_http1_total: Counter
    downstream_cx_http2_total: Counter
    downstream_cx_protocol_error: Counter
    downstream_cx_idle_timeout: Counter
    downstream_cx_drain_close: Counter
    downstream_cx_destroy_remote_active_rq: Counter
    downstream_rq_total: Counter
    downstream_rq_active: Gauge
    downstream_rq_header_timeout: Counter
    downstream_rq_rx_reset: Counter
    downstream_rq_tx_reset: Counter
    downstream_cx_rapid_reset: Counter
    downstream_rs_trailers_dropped: Counter
    downstream_cx_upgrades_total: Counter
    downstream_cx_upgrades_active: Gauge
    downstream_cx_upgrade_rx_bytes_total: Counter
    downstream_cx_upgrade_tx_bytes_total: Counter
    downstream_rq_time: Histogram
    no_route: Counter
    by_class: dict[int, Counter]

    @classmethod
    def create(cls, scope: Scope) -> "HcmStats":
        by_class = {c: scope.counter(f"downstream_rq_{c}xx") for c in range(1, 6)}
        return create_stats(cls, scope, by_class=by_class)

    def record(self, info: StreamInfo) -> None:
        if 100 <= info.response_code <= 599:
            self.by_class[info.response_code // 100].value += 1
        self.downstream_rq_time.record(info.duration_ms())


class HttpConnectionManager:
    """Per-listener HCM state: route table, filter factories, router, stats, drain flag."""

    def __init__(
        self,
        name: str,
        listener: ListenerConfig,
        config: GatewayConfig,
        clusters: ClusterManager,
        store: StatsStore,
        access_log: AccessLogger | None,
        server: ServerState,
    ) -> None:
        self.name = name
        self.config = listener
        self.route_table = RouteTable(listener.virtual_hosts, config)
        self.clusters = clusters
        self.router = RouterFilter(clusters)
        self._filter_factories = self._build_filter_factories(config, store, server)
        self.stats = HcmStats.create(
            store.scope(f"http.{name}", "http", {"envoy_http_conn_manager_prefix": name})
        )
        self.access_log = access_log
        self.draining = False
        self._connections: set[DownstreamConnection] = set()

    def _build_filter_factories(
        self, config: GatewayConfig, store: StatsStore, server: ServerState
    ) -> dict[str | None, list[HttpFilterFactory]]:
        """The filter chain for each route (key: route name; None when no route matched):
        the listener's filters, minus those a route or its virtual host disables, with the
        config a route or virtual host overrides. Built once, at start."""

        def factory(name: str, filter_config: object) -> HttpFilterFactory:
            filter_type = FILTER_TYPES[config.http_filters[name].type]
            scope = store.scope(
                f"http.{self.name}.{name}",
                "http_filter",
                {"envoy_http_conn_manager_prefix": self.name, "envoy_http_filter_name": name},
            )
            context = FilterContext(name, scope, server, self.clusters)
            return filter_type.create_factory(filter_config, context)

        names = self.config.http_filters
        base = {name: factory(name, config.http_filters[name].config) for name in names}
        chains: dict[str | None, list[HttpFilterFactory]] = {None: [base[n] for n in names]}
        for entry in self.route_table.entries():
            chain = []
            for name in names:
                override = entry.config.http_filters.get(name) or (
                    entry.virtual_host.http_filters.get(name)
                )
                if override is None:
                    chain.append(base[name])
                elif not override.disabled:
                    assert override.config is not None
                    filter_type = config.http_filters[name].type
                    chain.append(
                        factory(name, structure_filter_config(filter_type, override.config))
                    )
            chains[entry.name] = chain
        return chains

    def filters_for(self, route: RouteEntry | None) -> list[HttpFilterFactory]:
        return self._filter_factories[route.name if route is not None else None]

    async def handle_connection(self, stream: trio.SocketStream, peer: str) -> None:
        initial = await self._sniff(stream)
        if initial is None:
            return
        conn: DownstreamConnection
        if self.config.codec == "http2" or (
            self.config.codec == "auto" and initial.startswith(H2_PREFACE)
        ):
            from gateway.http.conn_h2 import Http2Connection

            self.stats.downstream_cx_http2_total.inc()
            conn = Http2Connection(self, stream, peer, initial)
        else:
            from gateway.http.conn_h1 import Http1Connection

            self.stats.downstream_cx_http1_total.inc()
            conn = Http1Connection(self, stream, peer, initial)
        annotate("connection", live=conn.task_fields, peer=peer, listener=self.name)
        self._connections.add(conn)
        self.stats.downstream_cx_total.inc()
        self.stats.downstream_cx_active.inc()
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            self.stats.downstream_cx_active.dec()

    async def _sniff(self, stream: trio.SocketStream) -> bytes | None:
        """The first bytes, enough to tell the HTTP/2 preface from an HTTP/1.1 request;
        None if the client sent nothing within the idle timeout."""
        if self.config.codec != "auto":
            return b""
        data = b""
        with trio.move_on_after(self.config.idle_timeout):
            while len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
                try:
                    chunk = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return None
                if not chunk:
                    return None
                data += chunk
            return data
        self.stats.downstream_cx_idle_timeout.inc()
        return None

    def new_stream(
        self,
        encoder: ResponseEncoder,
        event: RequestHeaders,
        peer: str,
        body: trio.MemoryReceiveChannel[BodyItem] | None,
    ) -> ActiveStream:
        """An ActiveStream for a request head: edge headers, stream info, filters."""
        head = event.head
        info = StreamInfo(
            stream_id=event.stream_id,
            downstream_remote=peer,
            protocol="HTTP/2" if head.http_version == "2" else f"HTTP/{head.http_version}",
            method=head.method,
            path=head.path,
            authority=head.authority or "-",
        )
        _edge_headers(head, info, peer.rpartition(":")[0].strip("[]"))
        self.stats.downstream_rq_total.inc()
        return ActiveStream(self, encoder, head, info, body)

    async def run_stream(self, stream: ActiveStream) -> None:
        """The body of a stream task: annotate it for /tasks, then filters and router."""
        info = stream.info
        annotate(
            "stream",
            live=lambda: {
                "state": info.state,
                "route": info.route_name,
                "upstream_host": info.upstream_host,
            },
            peer=info.downstream_remote,
            method=info.method,
            path=info.path,
        )
        self.stats.downstream_rq_active.inc()
        try:
            await stream.run(self.router)
        finally:
            self.stats.downstream_rq_active.dec()

    def drain(self) -> None:
        """New responses carry Connection: close; idle keep-alive connections close now."""
        self.draining = True
        for conn in list(self._connections):
            conn.drain()

    def finish(self, info: StreamInfo) -> None:
        self.stats.record(info)
        if self.access_log is not None:
            self.access_log.log(info)


def _edge_headers(head: RequestHead, info: StreamInfo, peer_ip: str) -> None:
    """x-forwarded-for (append the peer), x-forwarded-proto, x-request-id (keep or make)."""
    headers = head.headers
    prior = ", ".join(headers.get_all("x-forwarded-for"))
    xff = f"{prior}, {peer_ip}" if prior else peer_ip
    headers.set("x-forwarded-for", xff)
    headers.set("x-forwarded-proto", head.scheme)
    request_id = headers.get("x-request-id")
    if not request_id:
        request_id = str(uuid.uuid4())
        headers.set("x-request-id", request_id)
    info.request_id = request_id
    info.forwarded_for = xff
    info.user_agent = headers.get("user-agent") or "-"
