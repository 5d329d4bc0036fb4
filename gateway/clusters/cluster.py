"""A cluster: its hosts (each with a pool), their health, and the load balancer over them.

Each cluster is a task with a nursery; each host is a task in it that owns the host's
background work (pool reaper, HTTP/2 connection readers, health checker). A host that
leaves (DNS no longer returns it) stops taking requests at once, drains what it has in
flight, and then its task ends. Health changes and host-set changes only mark the load
balancer stale; the next pick rebuilds it, so the hot path stays a single call.
"""

import functools
import logging

import trio

from gateway.clusters.circuit_breakers import ResourceManager
from gateway.clusters.cluster_stats import ClusterStats, HostStats
from gateway.clusters.dns import DnsResolver
from gateway.clusters.health_check import HealthChecker, HealthCheckStats
from gateway.clusters.host import HealthFlag, Host
from gateway.clusters.load_balancer import (
    LoadBalancer,
    NoHosts,
    build_load_balancer,
    create_load_balancer,
)
from gateway.clusters.outlier_detection import OutlierDetector
from gateway.clusters.pool_h1 import HostPool
from gateway.clusters.pool_h2 import H2HostPool
from gateway.clusters.transport_socket import UpstreamConnector, connect_upstream
from gateway.config.model import Address, Endpoint
from gateway.config.model import Cluster as ClusterConfig
from gateway.errors import UpstreamConnectError
from gateway.io.byte_stream import ByteStream
from gateway.observability.stats import StatsStore
from gateway.observability.tasktree import annotate

log = logging.getLogger("gateway.cluster")


#: Policies whose table is too big to build at once on the event loop when hosts change.
_TABLE_POLICIES = ("ring_hash", "maglev")
#: Seconds between two builds of such a table.
_MIN_TABLE_BUILD_INTERVAL = 0.5


class Cluster:
    def __init__(
        self, name: str, config: ClusterConfig, store: StatsStore, connector: UpstreamConnector
    ) -> None:
        self.name = name
        self.config = config
        #: How its pools, health checks and raw connections reach its hosts.
        self._connector = connector
        scope = store.scope(f"cluster.{name}", "cluster", {"envoy_cluster_name": name})
        self.stats = ClusterStats.create(scope, tls=config.tls is not None)
        self.resources = ResourceManager(config.circuit_breakers, scope)
        self.health_check_stats = HealthCheckStats.create(scope) if config.health_checks else None
        self.outlier = (
            OutlierDetector(config.outlier_detection, name, self, scope)
            if config.outlier_detection is not None
            else None
        )
        self._hosts: list[Host] = []
        if config.type != "strict_dns":  # logical_dns: one host, its address kept fresh
            self._hosts = [self._new_host(e.address, e.weight) for e in config.endpoints]
        self._lb: LoadBalancer = NoHosts()
        #: Host changes so far, and the change the balancer was built for: it is stale
        #: while they differ.
        self._changes = 1
        self._built_for = 0
        #: A ring_hash or maglev table is being built (`_rebuild_in_slices`), and when the
        #: next may start.
        self._rebuilding = False
        self._next_build = 0.0
        self._panic = False
        self._nursery: trio.Nursery | None = None
        self._retired = trio.Event()
        self._update_membership()

    def __repr__(self) -> str:
        return f"<Cluster {self.name} hosts={[str(h) for h in self._hosts]}>"

    # -- hosts and health ------------------------------------------------------------------

    @property
    def hosts(self) -> list[Host]:
        return self._hosts

    def _new_host(self, address: Address, weight: int) -> Host:
        host_stats = HostStats()
        pool_class = H2HostPool if self.config.protocol == "http2" else HostPool
        pool = pool_class(
            address, self.config, self.stats, host_stats, self.resources, self._connector
        )
        host = Host(address, weight, pool, host_stats)
        if self.config.health_checks:
            host.health_flags = HealthFlag.FAILED_ACTIVE_HC  # until its first check passes
        return host

    def set_health_flag(self, host: Host, flag: HealthFlag, on: bool) -> None:
        flags = host.health_flags | flag if on else host.health_flags & ~flag
        if flags != host.health_flags:
            host.health_flags = flags
            self._changed()

    def _changed(self) -> None:
        self._changes += 1
        self._update_membership()
        if self.config.lb_policy in _TABLE_POLICIES and self._nursery and not self._rebuilding:
            self._rebuilding = True
            self._nursery.start_soon(self._rebuild_in_slices, name=f"load balancer {self.name}")

    async def _rebuild_in_slices(self) -> None:
        """Builds a ring_hash or maglev table a slice at a time (65,537 maglev slots take
        ~85 ms of Python): a host whose health flaps must not stall every request on the
        worker. (A thread would not help: the build holds the GIL, and the loop would wait
        for it at every syscall.) Requests keep the previous table until the new one is
        in; changes that arrive meanwhile are folded into one more build."""
        try:
            while self._built_for < self._changes:
                # At most one build per interval: a flapping host costs a bounded share of
                # the loop (a 65,537-slot maglev table every 0.5 s: under a fifth of it).
                await trio.sleep_until(self._next_build)
                self._next_build = trio.current_time() + _MIN_TABLE_BUILD_INTERVAL
                change = self._changes
                usable, panic = self.usable_hosts()
                build = build_load_balancer(self.config, usable, list(self._hosts), self._lb)
                while True:
                    try:
                        next(build)
                    except StopIteration as done:
                        if change > self._built_for:  # (not overtaken by a build at once)
                            self._lb, self._panic = done.value, panic
                            self._built_for = change
                        break
                    await trio.lowlevel.checkpoint()
        finally:
            self._rebuilding = False

    def _update_membership(self) -> None:
        self.stats.membership_total.value = len(self._hosts)
        self.stats.membership_healthy.value = sum(1 for h in self._hosts if h.healthy)

    def usable_hosts(self) -> tuple[list[Host], bool]:
        """The hosts to balance over (the ones the load balancer may pick), and whether
        that is panic mode."""
        hosts = self._hosts
        healthy = [h for h in hosts if h.healthy]
        # Envoy's panic mode: with too few healthy hosts, spreading load over all of them
        # beats crushing the few that are left.
        threshold = self.config.healthy_panic_threshold
        panic = bool(hosts) and len(healthy) * 100 < threshold * len(hosts)
        return (hosts if panic else healthy), panic

    def _rebuild_load_balancer(self) -> None:
        usable, self._panic = self.usable_hosts()
        self._lb = create_load_balancer(self.config, usable, self._hosts, self._lb)
        self._built_for = self._changes

    async def open_connection(self, host: Host, *, proxy_header: bytes = b"") -> ByteStream:
        """A raw connection to `host`, for bytes the pools do not carry (tcp_proxy, CONNECT),
        within connect_timeout; counted in the cluster's connection stats (the caller
        decrements upstream_cx_active when it closes it). UpstreamConnectError on failure."""
        stats = self.stats
        stats.upstream_cx_total.inc()
        try:
            with trio.fail_after(self.config.connect_timeout):
                upstream = await connect_upstream(
                    self._connector, host.address, self.config, alpn=[], proxy_header=proxy_header
                )
        except (OSError, trio.TooSlowError) as exc:
            stats.record_connect(exc)
            stats.upstream_cx_connect_fail.inc()
            raise UpstreamConnectError(f"connect to {host} failed: {exc!r}") from exc
        stats.record_connect(None)
        stats.upstream_cx_active.inc()
        return upstream

    def choose_host(self, hash_key: int | None = None, avoid: tuple[Host, ...] = ()) -> Host | None:
        """A host for the next request; None when there is none to use (503 UH). `avoid`
        holds hosts already tried by this request: a retry goes elsewhere if it can."""
        if self._built_for < self._changes and (
            not self._rebuilding or isinstance(self._lb, NoHosts)
        ):
            self._rebuild_load_balancer()  # cheap policies, and the very first table
        host = self._lb.choose(hash_key)
        if avoid and host in avoid:
            # A few fresh picks (a hash-based policy picks at random without a key).
            for _ in range(3):
                other = self._lb.choose(None)
                if other not in avoid:
                    host = other
                    break
        if self._panic:
            self.stats.lb_healthy_panic.inc()
        return host

    def hash_pick(self, hash_key: int) -> Host | None:
        """The host a ring_hash or maglev balancer gives `hash_key` now (None for the
        other policies): for /explain, which must not advance a rotation nor count a panic
        the way `choose_host` does."""
        if self.config.lb_policy not in _TABLE_POLICIES:
            return None
        if isinstance(self._lb, NoHosts) and self._built_for < self._changes:
            self._rebuild_load_balancer()  # no request built the first table yet
        return self._lb.choose(hash_key)

    # -- DNS -----------------------------------------------------------------------------

    def set_resolved_hosts(self, index: int, addresses: list[Address]) -> None:
        """strict_dns: endpoint `index` now resolves to `addresses` (in DNS order)."""
        endpoint = self.config.endpoints[index]
        port = endpoint.address.port
        self._set_hosts(
            index, [Endpoint(Address(a.host, port), endpoint.weight) for a in addresses]
        )

    def assign_endpoints(self, endpoints: list[Endpoint]) -> None:
        """eds: the cluster's hosts are now `endpoints` (a ClusterLoadAssignment)."""
        self._set_hosts(0, endpoints)

    def _set_hosts(self, index: int, wanted: list[Endpoint]) -> None:
        """The hosts that come from endpoint `index` become `wanted`. Hosts that stay keep
        their pools, health and in-flight requests; new ones start; gone ones drain."""
        current = {h.address: h for h in self._hosts if h.endpoint_index == index}
        weights = {h.address: h.weight for h in current.values()}
        if weights == {e.address: e.weight for e in wanted}:
            return
        others = [h for h in self._hosts if h.endpoint_index != index]
        kept: list[Host] = []
        for endpoint in wanted:
            host = current.pop(endpoint.address, None)
            if host is None:
                host = self._new_host(endpoint.address, endpoint.weight)
                host.endpoint_index = index
                self._start_host(host)
            host.weight = endpoint.weight
            kept.append(host)
        for gone in current.values():
            log.info("cluster %s: host %s left", self.name, gone)
            if self.outlier is not None:
                self.outlier.uneject(gone)
            gone.removed.set()
        self._hosts = others + kept
        self.stats.membership_change.inc()
        self._changed()

    def set_logical_address(self, address: Address) -> None:
        """logical_dns: new connections of the one host go to `address`; connections
        already open stay where they are, as in Envoy."""
        host = self._hosts[0]
        resolved = Address(address.host, self.config.endpoints[0].address.port)
        if host.pool.address != resolved:
            host.pool.address = resolved
            self.stats.membership_change.inc()

    # -- tasks ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The cluster's task: host tasks, DNS refreshes and outlier detection. Reports
        started once every host's first health check and the first DNS answers are in
        (Envoy's cluster warming), so the first requests see known health."""
        annotate(
            "cluster",
            lambda: {"hosts": len(self._hosts), "healthy": self.stats.membership_healthy.value},
            cluster=self.name,
            type=self.config.type,
            lb_policy=self.config.lb_policy,
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                async with trio.open_nursery() as warming:
                    for host in self._hosts:
                        warming.start_soon(self._start_and_wait, host)
                    for resolver in self._resolvers():
                        warming.start_soon(
                            functools.partial(nursery.start, resolver.run, name=resolver.name)
                        )
                if self.outlier is not None:
                    nursery.start_soon(self.outlier.run, name=f"outlier detection {self.name}")
                task_status.started()
                await self._retired.wait()
                # A reload replaced or removed the cluster: every host drains its pool
                # (requests in flight finish), then the cluster's task ends.
                for host in self._hosts:
                    host.removed.set()
                async with trio.open_nursery() as waiting:
                    for host in self._hosts:
                        waiting.start_soon(host.pool.drained.wait)
                nursery.cancel_scope.cancel()
        finally:
            for host in self._hosts:
                host.pool.close()

    def retire(self, deadline: float) -> None:
        """Stops the cluster once its in-flight requests are done, or at `deadline`."""
        self._retired.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.deadline = deadline

    def _resolvers(self) -> list[DnsResolver]:
        config = self.config
        if config.type in ("static", "eds"):
            return []
        if config.type == "logical_dns":
            on_resolved = [lambda addresses: self.set_logical_address(addresses[0])]
        else:
            on_resolved = [
                functools.partial(self.set_resolved_hosts, i) for i in range(len(config.endpoints))
            ]
        return [
            DnsResolver(self.name, e.address, config.dns_refresh_rate, self.stats, callback)
            for e, callback in zip(config.endpoints, on_resolved, strict=True)
        ]

    def _start_host(self, host: Host) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._run_host, host, name=f"host {host}")

    async def _start_and_wait(self, host: Host) -> None:
        assert self._nursery is not None
        await self._nursery.start(self._run_host, host, name=f"host {host}")

    async def _run_host(
        self, host: Host, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        annotate(
            "host",
            lambda: {"health": host.health_flag_names(), "rq_active": host.stats.rq_active},
            cluster=self.name,
            upstream_host=str(host),
            weight=host.weight,
        )
        async with trio.open_nursery() as nursery:
            host.pool.start(nursery)
            if self.health_check_stats is not None:
                for check in self.config.health_checks:
                    checker = HealthChecker(
                        self.name,
                        self.config,
                        check,
                        host,
                        self,
                        self.health_check_stats,
                        self._connector,
                    )
                    await nursery.start(checker.run, name=f"health check {check.type} {host}")
            task_status.started()
            await host.removed.wait()
            # Leaving: no new requests reach it (it is off the host list); the ones in
            # flight finish on their connections, which close as they come back.
            host.pool.drain()
            await host.pool.drained.wait()
            nursery.cancel_scope.cancel()
