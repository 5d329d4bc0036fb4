"""The cluster manager: every cluster, each a task with its hosts' background work."""

import functools

import trio

from gateway.clusters.cluster import Cluster
from gateway.clusters.transport_socket import UpstreamConnector, open_tcp
from gateway.config.model import GatewayConfig
from gateway.errors import ClusterNotFound
from gateway.observability.stats import StatsStore
from gateway.observability.tasktree import annotate


class ClusterManager:
    def __init__(
        self,
        config: GatewayConfig,
        store: StatsStore,
        connector: UpstreamConnector = open_tcp,
    ) -> None:
        self._store = store
        #: How every cluster reaches its hosts (a test hands in one of its own).
        self._connector = connector
        self.clusters = {
            name: Cluster(name, c, store, connector) for name, c in config.clusters.items()
        }
        self._nursery: trio.Nursery | None = None

    def get(self, name: str) -> Cluster:
        """The cluster named `name`; ClusterNotFound (503, flag NC) if a reload removed it
        while a draining connection still routes to it."""
        cluster = self.clusters.get(name)
        if cluster is None:
            raise ClusterNotFound(f"no cluster named {name!r}")
        return cluster

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs every cluster until cancelled. Reports started once all clusters have
        warmed up (first health checks and DNS answers), which they do side by side."""
        annotate("cluster_manager", lambda: {"clusters": len(self.clusters)})
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._start(list(self.clusters.values()))
            task_status.started()

    async def _start(self, clusters: list[Cluster]) -> None:
        assert self._nursery is not None
        async with trio.open_nursery() as warming:
            for cluster in clusters:
                start = functools.partial(
                    self._nursery.start, cluster.run, name=f"cluster {cluster.name}"
                )
                warming.start_soon(start)

    async def update(self, config: GatewayConfig, drain_deadline: float) -> list[str]:
        """A reload (Envoy's CDS update): clusters whose config changed are replaced by
        new ones, warmed before they take requests; the old ones, and removed ones, drain
        until `drain_deadline`. Unchanged clusters keep their pools and host health.
        Returns what changed, for the log."""
        changes: list[str] = []
        fresh: list[Cluster] = []
        for name, cluster_config in config.clusters.items():
            old = self.clusters.get(name)
            if old is None or old.config != cluster_config:
                fresh.append(Cluster(name, cluster_config, self._store, self._connector))
                changes.append(f"cluster {name} {'added' if old is None else 'changed'}")
        await self._start(fresh)
        for cluster in fresh:
            old = self.clusters.get(cluster.name)
            self.clusters[cluster.name] = cluster
            if old is not None:
                old.retire(drain_deadline)
        for name in set(self.clusters) - set(config.clusters):
            self.clusters.pop(name).retire(drain_deadline)
            changes.append(f"cluster {name} removed")
        return changes
