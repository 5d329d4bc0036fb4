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
        """Runs one nursery per cluster for its pools' background tasks (reapers, HTTP/2
        connection readers) until cancelled; then closes the pools."""
        annotate("cluster_manager", clusters=len(self.clusters))
        try:
            async with trio.open_nursery() as nursery:
                for cluster in self.clusters.values():
                    await nursery.start(self._run_cluster, cluster, name=f"cluster {cluster.name}")
                task_status.started()
        finally:
            for cluster in self.clusters.values():
                for host in cluster.hosts:
                    host.pool.close()

    @staticmethod
    async def _run_cluster(
        cluster: Cluster, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        annotate("cluster", cluster=cluster.name, hosts=len(cluster.hosts))
        async with trio.open_nursery() as nursery:
            for host in cluster.hosts:
                host.pool.start(nursery)
            task_status.started()
            await trio.sleep_forever()
