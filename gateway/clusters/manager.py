"""The cluster manager: every cluster, and the background tasks that keep pools tidy."""

import trio

from gateway.clusters.cluster import Cluster
from gateway.config.model import GatewayConfig
from gateway.stats import StatsStore
from gateway.tasktree import annotate


class ClusterManager:
    def __init__(self, config: GatewayConfig, store: StatsStore) -> None:
        self.clusters = {name: Cluster(name, c, store) for name, c in config.clusters.items()}

    def get(self, name: str) -> Cluster:
        return self.clusters[name]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs each cluster's idle-connection reaper until cancelled; then closes pools."""
        annotate("cluster_manager", clusters=len(self.clusters))
        try:
            async with trio.open_nursery() as nursery:
                for cluster in self.clusters.values():
                    nursery.start_soon(self._reap, cluster, name=f"cluster {cluster.name} reaper")
                task_status.started()
        finally:
            for cluster in self.clusters.values():
                for host in cluster.hosts:
                    host.pool.close()

    @staticmethod
    async def _reap(cluster: Cluster) -> None:
        annotate("cluster", cluster=cluster.name, hosts=len(cluster.hosts))
        interval = max(cluster.config.idle_timeout / 2, 0.05)
        while True:
            await trio.sleep(interval)
            for host in cluster.hosts:
                host.pool.reap_idle()
