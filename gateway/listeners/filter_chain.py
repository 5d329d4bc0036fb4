"""Filter chains: building them from config, and choosing one for a connection.

A listener has one or more chains; each has a match, optional TLS, and network filters.
The single-chain form of a listener (HTTP keys at its top level) is one chain that
matches everything and runs the HTTP connection manager.

Choosing is Envoy's filter_chain_match: the criteria are taken in a fixed order
(destination port, server name, transport protocol, application protocols, source
address) and each narrows the candidates to those that match it most specifically; a
chain that does not set a criterion matches it least specifically of all. So an exact
server name beats `*.example.com`, which beats a chain with no server names, and a chain
that names other servers drops out. `select` is pure: no sockets, no clock. Given a list,
it also notes each chain it drops and at which criterion, for /explain.
"""

import ipaddress
from collections.abc import Callable, Sequence

import attrs

from gateway.clusters.manager import ClusterManager
from gateway.config.model import AccessLog as AccessLogConfig
from gateway.config.model import (
    ConnectionLimit,
    FilterChainMatch,
    GatewayConfig,
    HttpConnectionManagerConfig,
    HttpConnectionManagerOptions,
    NetworkFilterConfig,
    NetworkRbac,
    TcpProxy,
)
from gateway.config.model import FilterChain as FilterChainConfig
from gateway.config.model import Listener as ListenerConfig
from gateway.errors import ConfigError, StartupError
from gateway.http.conn_manager import HttpConnectionManager
from gateway.io.byte_stream import ByteStream
from gateway.listeners.access_control import ConnectionLimitFilter, RbacFilter
from gateway.listeners.network_filter import ConnectionInfo, NetworkFilter, NextFilter
from gateway.listeners.tcp_proxy import TcpProxyFilter
from gateway.listeners.tls import TlsTerminator
from gateway.observability.access_log import AccessLogger
from gateway.observability.stats import Scope, StatsStore
from gateway.router.route_table import RouteTables
from gateway.server.state import ServerState

#: How specifically a chain matches one criterion: None = not at all, higher = better.
Score = tuple[int, int] | None


@attrs.define(eq=False)
class FilterChain:
    name: str
    match: FilterChainMatch
    tls: TlsTerminator | None
    filters: list[NetworkFilter]
    #: The HTTP connection managers among the filters, told when the listener drains.
    managers: list[HttpConnectionManager]


def _port_score(m: FilterChainMatch, info: ConnectionInfo) -> Score:
    if m.destination_port is None:
        return (0, 0)
    return (1, 0) if m.destination_port == info.destination_port else None


def _server_name_score(m: FilterChainMatch, info: ConnectionInfo) -> Score:
    if not m.server_names:
        return (0, 0)
    name = (info.server_name or "").lower()
    best: Score = None
    for pattern in m.server_names:
        pattern = pattern.lower()
        if pattern == name:
            return (2, len(pattern))
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            score = (1, len(pattern))
            best = score if best is None or score > best else best
    return best


def _transport_score(m: FilterChainMatch, info: ConnectionInfo) -> Score:
    if m.transport_protocol is None:
        return (0, 0)
    return (1, 0) if m.transport_protocol == info.transport_protocol else None


def _alpn_score(m: FilterChainMatch, info: ConnectionInfo) -> Score:
    if not m.application_protocols:
        return (0, 0)
    return (1, 0) if set(m.application_protocols) & set(info.application_protocols) else None


def _source_score(m: FilterChainMatch, info: ConnectionInfo) -> Score:
    if not m.source_prefix_ranges:
        return (0, 0)
    lengths = [
        network.prefixlen
        for cidr in m.source_prefix_ranges
        if info.source_ip in (network := ipaddress.ip_network(cidr, strict=False))
    ]
    return (1, max(lengths)) if lengths else None


#: Each criterion by its filter_chain_match field, in the order they narrow the chains.
_CRITERIA: tuple[tuple[str, Callable[[FilterChainMatch, ConnectionInfo], Score]], ...] = (
    ("destination_port", _port_score),
    ("server_names", _server_name_score),
    ("transport_protocol", _transport_score),
    ("application_protocols", _alpn_score),
    ("source_prefix_ranges", _source_score),
)


@attrs.frozen
class Dropped:
    """A chain `select` left out: at which criterion, and whether it did not match it at
    all or another chain matched it more specifically (or, `criterion` "tie", as well:
    the first listed wins)."""

    chain: FilterChain
    criterion: str
    matched: bool


def select(
    chains: Sequence[FilterChain], info: ConnectionInfo, dropped: list[Dropped] | None = None
) -> FilterChain | None:
    """The most specific chain matching the connection, or None. Validation refuses
    chains with equal matches; of chains that tie anyway (overlapping lists), the first
    listed wins. Each chain left out is appended to `dropped`, if given."""
    candidates = list(chains)
    for name, criterion in _CRITERIA:
        scored = [(criterion(c.match, info), c) for c in candidates]
        best = max((s for s, _ in scored if s is not None), default=None)
        if dropped is not None:
            dropped += [
                Dropped(c, name, s is not None) for s, c in scored if s is None or s != best
            ]
        if best is None:
            return None
        candidates = [c for s, c in scored if s == best]
    if dropped is not None:
        dropped += [Dropped(c, "tie", True) for c in candidates[1:]]
    return candidates[0]


def needs_inspection(chains: Sequence[FilterChain]) -> bool:
    """Whether the ClientHello must be read first: to match on what it says, or to pick a
    certificate by SNI."""
    return any(
        c.tls is not None
        or c.match.server_names
        or c.match.application_protocols
        or c.match.transport_protocol is not None
        for c in chains
    )


class HcmFilter:
    """The HTTP connection manager as a (terminal) network filter."""

    def __init__(self, manager: HttpConnectionManager) -> None:
        self.manager = manager

    async def on_new_connection(
        self, stream: ByteStream, info: ConnectionInfo, next_filter: NextFilter
    ) -> None:
        await self.manager.handle_connection(stream, info)


@attrs.define
class ChainBuilder:
    """What building a listener's chains needs; collects the access logs it opens."""

    listener: str
    config: GatewayConfig
    clusters: ClusterManager
    store: StatsStore
    server: ServerState
    #: Route tables built ahead (a reload builds them in a worker thread); a connection
    #: manager whose table is not here builds its own.
    route_tables: RouteTables = attrs.Factory(dict)
    access_logs: list[AccessLogger] = attrs.Factory(list)

    @property
    def ssl_scope(self) -> Scope:
        """The listener's `ssl.*` stats, shared by its chains (as Envoy's)."""
        labels = {"envoy_listener_name": self.listener}
        return self.store.scope(f"listener.{self.listener}.ssl", "listener.ssl", labels)

    def build(
        self, chain: FilterChainConfig, name: str, where: str, *, implicit: bool = False
    ) -> FilterChain:
        """A chain from its config; `where` is its TOML path (for an implicit chain, the
        listener's, whose keys configure its one filter)."""
        tls = None
        if chain.tls is not None:
            try:
                tls = TlsTerminator(chain.tls, f"{where}.tls", self.ssl_scope)
            except ConfigError as exc:  # a file changed since the config was validated
                raise StartupError(exc.errors[0]) from None
        filters: list[NetworkFilter] = []
        managers = []
        for i, filter_config in enumerate(chain.filters):
            at = where if implicit else f"{where}.filters[{i}]"
            network_filter = self._filter(filter_config, at)
            if isinstance(network_filter, HcmFilter):
                managers.append(network_filter.manager)
            filters.append(network_filter)
        return FilterChain(name, chain.filter_chain_match, tls, filters, managers)

    def _filter(self, config: NetworkFilterConfig, where: str) -> NetworkFilter:
        prefix = config.stat_prefix or self.listener
        if isinstance(config, HttpConnectionManagerConfig):
            access_logs = [
                self._open_access_log(
                    c, f"{where}.access_log" + (f"[{i}]" if len(config.access_log) > 1 else "")
                )
                for i, c in enumerate(config.access_log)
            ]
            manager = HttpConnectionManager(
                prefix,
                config,
                self.config,
                self.clusters,
                self.store,
                access_logs,
                self.server,
                self.route_tables,
            )
            return HcmFilter(manager)
        if isinstance(config, TcpProxy):
            return TcpProxyFilter(config, prefix, self.clusters, self.store)
        if isinstance(config, NetworkRbac):
            return RbacFilter(config, prefix, self.store)
        assert isinstance(config, ConnectionLimit)
        return ConnectionLimitFilter(config, prefix, self.store)

    def _open_access_log(self, config: AccessLogConfig, where: str) -> AccessLogger:
        try:
            access_log = AccessLogger(config)
        except OSError as exc:
            raise StartupError(
                f"{where}.path: cannot open {config.path}: {exc.strerror or exc}"
            ) from None
        self.access_logs.append(access_log)
        return access_log


def listener_hcm(listener: ListenerConfig) -> HttpConnectionManagerConfig:
    """The single-chain form's HTTP connection manager, from the listener's own keys."""
    values = {f.name: getattr(listener, f.name) for f in attrs.fields(HttpConnectionManagerOptions)}
    return HttpConnectionManagerConfig(type="http_connection_manager", **values)


def build_filter_chains(
    builder: ChainBuilder, listener: ListenerConfig
) -> tuple[list[FilterChain], FilterChain | None]:
    """The listener's chains and its default chain."""
    where = f"listeners.{builder.listener}"
    if not listener.filter_chains and listener.default_filter_chain is None:
        implicit = FilterChainConfig(filters=[listener_hcm(listener)])
        return [builder.build(implicit, "default", where, implicit=True)], None
    chains = [
        builder.build(c, c.name or f"filter_chains[{i}]", f"{where}.filter_chains[{i}]")
        for i, c in enumerate(listener.filter_chains)
    ]
    default = listener.default_filter_chain
    if default is None:
        return chains, None
    return chains, builder.build(
        default, default.name or "default", f"{where}.default_filter_chain"
    )
