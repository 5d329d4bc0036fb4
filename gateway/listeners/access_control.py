"""Two small network filters that decide whether a connection may go on: `rbac` (by
source address) and `connection_limit` (by how many are open). Neither touches the bytes.
"""

import ipaddress

import attrs

from gateway.config.model import ConnectionLimit, NetworkRbac
from gateway.io.byte_stream import ByteStream
from gateway.listeners.network_filter import ConnectionInfo, NextFilter
from gateway.observability.stats import Counter, Gauge, StatsStore, create_stats, describe


@attrs.define
class RbacStats:
    allowed: Counter
    denied: Counter


describe(
    "rbac",
    {
        "allowed": "Connections the network rbac filter let through.",
        "denied": "Connections the network rbac filter closed.",
    },
)


class RbacFilter:
    """Envoy's network RBAC: stats `PREFIX.rbac.allowed` and `PREFIX.rbac.denied`."""

    def __init__(self, config: NetworkRbac, stat_prefix: str, store: StatsStore) -> None:
        self._networks = [ipaddress.ip_network(c, strict=False) for c in config.source_cidrs]
        self._allow = config.action == "allow"
        scope = store.scope(f"{stat_prefix}.rbac", "rbac", {"envoy_rbac_prefix": stat_prefix})
        self.stats = create_stats(RbacStats, scope)

    def allows(self, source_ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        matched = any(source_ip in network for network in self._networks)
        return matched == self._allow

    async def on_new_connection(
        self, stream: ByteStream, info: ConnectionInfo, next_filter: NextFilter
    ) -> None:
        if not self.allows(info.source_ip):
            self.stats.denied.inc()
            return
        self.stats.allowed.inc()
        await next_filter(stream, info)


@attrs.define
class ConnectionLimitStats:
    active_connections: Gauge
    limited_connections: Counter


describe(
    "connection_limit",
    {
        "active_connections": "Connections open through the filter now.",
        "limited_connections": "Connections closed at once: max_connections were open.",
    },
)


class ConnectionLimitFilter:
    """Envoy's connection_limit: stats under `connection_limit.PREFIX.*`."""

    def __init__(self, config: ConnectionLimit, stat_prefix: str, store: StatsStore) -> None:
        self.max_connections = config.max_connections
        scope = store.scope(
            f"connection_limit.{stat_prefix}",
            "connection_limit",
            {"envoy_connection_limit_prefix": stat_prefix},
        )
        self.stats = create_stats(ConnectionLimitStats, scope)

    async def on_new_connection(
        self, stream: ByteStream, info: ConnectionInfo, next_filter: NextFilter
    ) -> None:
        active = self.stats.active_connections
        if active.value >= self.max_connections:
            self.stats.limited_connections.inc()
            return
        active.inc()
        try:
            await next_filter(stream, info)
        finally:
            active.dec()
