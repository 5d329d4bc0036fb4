"""What both connection pools share: identity, stats, statistics(), and the TCP connect."""

import abc

import attrs
import trio

from gateway.clusters.circuit_breakers import ResourceManager
from gateway.clusters.cluster_stats import ClusterStats, HostStats
from gateway.clusters.transport_socket import UpstreamConnector, connect_upstream
from gateway.config.model import Address, Cluster
from gateway.errors import UpstreamConnectError, UpstreamOverflow
from gateway.io.byte_stream import ByteStream


@attrs.frozen
class PoolStatistics:
    open: int
    idle: int
    waiting: int
    max_connections: int


class PoolBase(abc.ABC):
    def __init__(
        self,
        address: Address,
        config: Cluster,
        cluster_stats: ClusterStats,
        host_stats: HostStats,
        resources: ResourceManager,
        connector: UpstreamConnector,
    ) -> None:
        #: Where new connections go (a logical_dns refresh may change it).
        self.address = address
        self._config = config
        self._connector = connector
        self._label = str(address)
        self._cluster_stats = cluster_stats
        self._host_stats = host_stats
        self._resources = resources
        self._draining = False
        #: Set once a draining pool (its host left the cluster) has no connection left.
        self.drained = trio.Event()

    @abc.abstractmethod
    def statistics(self) -> PoolStatistics: ...

    def _start_draining(self) -> None:
        self._draining = True
        self._note_closed()

    def _note_closed(self) -> None:
        """A connection closed (or never opened): a draining pool may be done."""
        if self._draining and not self.statistics().open:
            self.drained.set()

    def _may_connect(self, open_here: int) -> bool:
        """Under the host's own limit and the cluster's max_connections breaker."""
        if open_here >= self._config.max_connections_per_host:
            return False
        if not self._resources.connections.can_create():
            self._cluster_stats.upstream_cx_overflow.inc()
            return False
        return True

    def _check_pending_breaker(self) -> None:
        """A request about to wait must fit under max_pending_requests, else 503 now."""
        if not self._resources.pending_requests.can_create():
            self._cluster_stats.upstream_rq_pending_overflow.inc()
            raise UpstreamOverflow()

    async def _open_tcp(self) -> ByteStream:
        """Connects within connect_timeout; failures count and become UpstreamConnectError."""
        self._host_stats.cx_total += 1
        self._cluster_stats.upstream_cx_total.inc()
        try:
            with trio.fail_after(self._config.connect_timeout):
                stream = await connect_upstream(self._connector, self.address, self._config)
        except (OSError, trio.TooSlowError) as exc:
            self._cluster_stats.record_connect(exc)
            self._host_stats.cx_connect_fail += 1
            self._cluster_stats.upstream_cx_connect_fail.inc()
            if isinstance(exc, trio.TooSlowError):
                self._cluster_stats.upstream_cx_connect_timeout.inc()
            raise UpstreamConnectError(f"connect to {self._label} failed: {exc!r}") from exc
        self._cluster_stats.record_connect(None)
        return stream
