"""What both connection pools share: identity, stats, statistics(), and the TCP connect."""

import attrs
import trio

from gateway.clusters.cluster_stats import ClusterStats, HostStats
from gateway.config.model import Address, Cluster
from gateway.errors import UpstreamConnectError


@attrs.frozen
class PoolStatistics:
    open: int
    idle: int
    waiting: int
    max_connections: int


class PoolBase:
    def __init__(
        self,
        address: Address,
        config: Cluster,
        cluster_stats: ClusterStats,
        host_stats: HostStats,
    ) -> None:
        self.address = address
        self._config = config
        self._label = str(address)
        self._cluster_stats = cluster_stats
        self._host_stats = host_stats

    async def _open_tcp(self) -> trio.SocketStream:
        """Connects within connect_timeout; failures count and become UpstreamConnectError."""
        self._host_stats.cx_total += 1
        self._cluster_stats.upstream_cx_total.inc()
        try:
            with trio.fail_after(self._config.connect_timeout):
                return await trio.open_tcp_stream(self.address.host, self.address.port)
        except (OSError, trio.TooSlowError) as exc:
            self._host_stats.cx_connect_fail += 1
            self._cluster_stats.upstream_cx_connect_fail.inc()
            if isinstance(exc, trio.TooSlowError):
                self._cluster_stats.upstream_cx_connect_timeout.inc()
            raise UpstreamConnectError(f"connect to {self._label} failed: {exc!r}") from exc
