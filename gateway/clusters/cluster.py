"""A cluster: its hosts, each with a connection pool and stats, and a load balancer."""

import attrs

from gateway.clusters.cluster_stats import ClusterStats, HostStats
from gateway.clusters.load_balancer import LoadBalancer, RoundRobin
from gateway.clusters.pool_h1 import HostPool
from gateway.clusters.pool_h2 import H2HostPool
from gateway.config.model import Address
from gateway.config.model import Cluster as ClusterConfig
from gateway.stats import StatsStore


@attrs.define(eq=False)
class Host:
    address: Address
    pool: HostPool | H2HostPool
    stats: HostStats

    def __str__(self) -> str:
        return str(self.address)


class Cluster:
    def __init__(self, name: str, config: ClusterConfig, store: StatsStore) -> None:
        self.name = name
        self.config = config
        self.stats = ClusterStats.create(
            store.scope(f"cluster.{name}", "cluster", {"envoy_cluster_name": name})
        )
        self.hosts: list[Host] = []
        for endpoint in config.endpoints:
            address = endpoint.address
            host_stats = HostStats()
            pool_class = H2HostPool if config.protocol == "http2" else HostPool
            pool = pool_class(address, config, self.stats, host_stats)
            self.hosts.append(Host(address, pool, host_stats))
        self._lb: LoadBalancer[Host] = RoundRobin()

    def __repr__(self) -> str:
        return f"<Cluster {self.name} hosts={[str(h) for h in self.hosts]}>"

    def choose_host(self) -> Host | None:
        return self._lb.choose(self.hosts)
