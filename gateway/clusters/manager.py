"""The cluster manager: every cluster, each a task with its hosts' background work."""

import functools

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
        """Runs every cluster until cancelled. Reports started once all clusters have
        warmed up (first health checks and DNS answers), which they do side by side."""
        annotate("cluster_manager", clusters=len(self.clusters))
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as warming:
                for cluster in self.clusters.values():
                    start = functools.partial(
                        nursery.start, cluster.run, name=f"cluster {cluster.name}"
                    )
                    warming.start_soon(start)
            task_status.started()
