"""A running gateway (`Gateway`): its config, stats, clusters and listeners, and the
reload that swaps in the next generation of them while the previous one drains.

`open_gateway` (run.py) runs one in the caller's nursery, with its admin endpoint; the
admin reads and drives it from above, so nothing here imports the admin.
"""

import logging
import time

import attrs
import trio

from gateway.clusters.manager import ClusterManager
from gateway.clusters.otlp_exporter import OtlpExporter
from gateway.config.model import Address, Admin, GatewayConfig
from gateway.config.model import Server as ServerConfig
from gateway.config.regex import compile_regex
from gateway.errors import StartupError
from gateway.listeners.filter_chain import ChainBuilder
from gateway.listeners.listener import Listener
from gateway.listeners.quic_listener import QuicListener
from gateway.listeners.swap import same_socket, swap_listeners
from gateway.observability.stats import StatsStore
from gateway.observability.tracing.sampler import Sampler
from gateway.observability.tracing.tracer import Tracer
from gateway.router.route_table import RouteTables, build_route_tables
from gateway.server.overload import OverloadManager
from gateway.server.state import ServerState
from gateway.xds.compose import XdsState

log = logging.getLogger("gateway.server")


@attrs.frozen
class WorkerRole:
    """What makes a process one worker among several: its number, and the ports the
    supervisor chose for listeners configured with port 0 (all workers must share them)."""

    index: int
    ports: dict[str, int]

    def apply(self, config: GatewayConfig) -> GatewayConfig:
        """The config as this worker runs it: the shared ports, and a private admin on a
        loopback port of its own (the supervisor's admin is the one operators use)."""
        listeners = {
            name: attrs.evolve(
                lst, address=Address(lst.address.host, self.ports.get(name, lst.address.port))
            )
            for name, lst in config.listeners.items()
        }
        admin = attrs.evolve(config.admin or Admin(), address=Address("127.0.0.1", 0))
        server = attrs.evolve(config.server, watch=False)  # the supervisor watches
        return attrs.evolve(config, listeners=listeners, admin=admin, server=server)


class Gateway:
    """A running gateway: its config, stats, clusters, listeners and bound ports."""

    def __init__(
        self,
        config: GatewayConfig,
        config_path: str | None = None,
        worker: WorkerRole | None = None,
    ) -> None:
        #: Set when this process is one of several workers (`[server] workers`).
        self.worker = worker
        self.config = config
        #: The config file's own content (without xDS resources), what reloads start from.
        self.static_config = config
        #: The `[dynamic]` xDS source, if any.
        self.xds: XdsState | None = None
        #: The file the config came from, if any (for /server_info and reloads).
        self.config_path = config_path
        self.started_at = time.time()
        self.stats = StatsStore(
            [(compile_regex(b.match), tuple(b.buckets)) for b in config.server.histogram_buckets],
            # Histograms keep their samples for the sinks (stats sinks take a restart).
            keep_samples=bool(config.stats_sinks),
        )
        self.state = ServerState(OverloadManager(config.overload, self.stats))
        self.clusters = ClusterManager(config, self.stats)
        #: `[tracing]`: the exporter task's work (open_gateway runs it); its buffer takes
        #: the spans of the tracer the connection managers start traces with. Set at start
        #: only: a reload does not change tracing.
        self.trace_exporter: OtlpExporter | None = None
        if config.tracing is not None:
            index = worker.index if worker is not None else None
            self.trace_exporter = OtlpExporter(config.tracing, self.clusters, self.stats, index)
            sampler = Sampler(config.tracing.sampling)
            self.state.tracer = Tracer(sampler, self.trace_exporter.buffer)
        self.listeners: dict[str, Listener] = self._build_listeners(config)
        self.admin_port: int | None = None
        #: Set by POST /quitquitquit (and by `gateway serve` on SIGINT/SIGTERM).
        self.shutdown_requested = trio.Event()
        #: The admin server stops last, once the listeners drained, and gracefully.
        self.admin_shutdown = trio.Event()
        self.admin_stopped = trio.Event()
        #: Every listener started, current or draining after a reload, until it stops.
        self._running: set[Listener] = set()
        #: The root nursery, once open_gateway runs: listeners and background jobs, at
        #: start and at each reload, are started in it.
        self.nursery: trio.Nursery | None = None
        #: Cancels the filters' background jobs of the config before the last reload.
        self._background_scope: trio.CancelScope | None = None
        self._reload_lock = trio.Lock()
        #: Serialises config updates (file reloads, xDS updates) from parsing to swap.
        self.update_lock = trio.Lock()
        self.reloads = 0

    def _build_listeners(
        self, config: GatewayConfig, route_tables: RouteTables | None = None
    ) -> dict[str, Listener]:
        return build_listeners(config, self.clusters, self.stats, self.state, route_tables)

    @property
    def draining(self) -> bool:
        return self.state.draining

    @property
    def listener_ports(self) -> dict[str, int]:
        """Bound ports by listener name (useful when the config asked for port 0)."""
        return {name: lst.port for name, lst in self.listeners.items() if lst.port is not None}

    def request_shutdown(self) -> None:
        self.shutdown_requested.set()

    async def start_listener(self, listener: Listener) -> None:
        assert self.nursery is not None
        self._running.add(listener)
        await self.nursery.start(self._run_listener, listener, name=f"listener {listener.name}")

    async def _run_listener(
        self, listener: Listener, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await listener.run(task_status=task_status)
        finally:
            self._running.discard(listener)

    def start_background(self) -> None:
        """Runs the background jobs the filters of the config just taken asked for; the
        previous config's keep running while its requests may need them (drain timeout)."""
        assert self.nursery is not None
        jobs = list(self.state.background)
        self.state.background.clear()
        if self._background_scope is not None:
            self._background_scope.deadline = drain_deadlines(self.config.server)[0]
        scope = self._background_scope = trio.CancelScope()

        async def run_jobs() -> None:
            with scope:
                async with trio.open_nursery() as nursery:
                    for task_name, job in jobs:
                        nursery.start_soon(job, name=task_name)

        if jobs:
            self.nursery.start_soon(run_jobs, name="filter background jobs")

    def drain_listeners(self) -> None:
        """Starts the drain (admin `/drain_listeners`, or the first step of a shutdown):
        listeners stop accepting, in-flight requests may finish until the drain timeout."""
        if self.state.draining:
            return  # the first drain's deadline stands
        self.state.draining = True
        deadline, grace = drain_deadlines(self.config.server)
        for listener in self._running:
            listener.drain(deadline, grace)

    async def drain(self) -> None:
        """Drains the listeners and waits for in-flight requests, up to the drain timeout."""
        self.drain_listeners()
        for listener in list(self._running):
            await listener.stopped.wait()

    async def reload(self, config: GatewayConfig) -> list[str]:
        """Takes a new, validated config without dropping a request (Envoy's LDS/RDS/CDS
        updates in one step). Listeners are rebuilt for new connections; one whose
        settings did not change keeps its sockets and its connections, whose next requests
        follow the new routes; one whose settings changed hands its sockets to its
        successor and drains (HTTP/1.1: `connection: close`; HTTP/2: GOAWAY) within the
        drain timeout. Changed clusters are replaced and warmed first; the old ones drain.
        Raises StartupError (leaving the old config serving) if a new listener cannot be
        built or bound. Returns what changed."""
        async with self._reload_lock:
            if self.state.draining:
                raise StartupError("the gateway is draining; not reloading")
            old_config, old_listeners = self.config, self.listeners
            # The CPU-heavy part of the build (route tables and their regexes) runs in a
            # worker thread, off the event loop.
            route_tables = await trio.to_thread.run_sync(build_route_tables, config)
            listeners = self._build_listeners(config, route_tables)
            changes = self._unsupported_changes(old_config, config)
            try:
                for name, listener in listeners.items():
                    previous = old_listeners.get(name)
                    if previous is None or not same_socket(previous, listener):
                        await listener.bind(reuse_port=self.worker is not None)
            except BaseException:
                for listener in listeners.values():
                    listener.close_unstarted()
                self.state.background.clear()  # the new filters' jobs, never to run
                raise
            # What the old config leaves behind drains by the new config's timeout.
            drain = drain_deadlines(config.server)
            changes += await self.clusters.update(config, drain[0])
            self.config = config
            changes += await swap_listeners(
                old_listeners, listeners, config, route_tables, drain, self.start_listener
            )
            self.listeners = listeners
            self.start_background()
            if config.overload != old_config.overload:
                self.state.overload.configure(config.overload)
                assert self.nursery is not None
                self.state.overload.start(self.nursery)
                changes.append("overload settings changed")
            self.reloads += 1
            log.warning("config reloaded: %s", "; ".join(changes) or "routes and filters")
            return changes

    @staticmethod
    def _unsupported_changes(old: GatewayConfig, new: GatewayConfig) -> list[str]:
        """Settings a reload cannot change in a running process; they take effect on the
        next start and are reported, not silently ignored."""
        notes = []
        if old.admin != new.admin:
            notes.append("admin settings take effect on restart")
        restart_only = (
            "workers",
            "histogram_buckets",
            "watch",
            "stats_flush_interval",
            "log_format",
        )
        if any(getattr(old.server, k) != getattr(new.server, k) for k in restart_only):
            notes.append(
                "server.workers, histogram_buckets, watch, stats_flush_interval and log_format "
                "take effect on restart"
            )
        if old.stats_sinks != new.stats_sinks:
            notes.append("stats_sinks take effect on restart")
        if old.tracing != new.tracing:
            notes.append("tracing settings take effect on restart")
        return notes


def build_listeners(
    config: GatewayConfig,
    clusters: ClusterManager,
    stats: StatsStore,
    state: ServerState,
    route_tables: RouteTables | None = None,
    *,
    in_memory: bool = False,
) -> dict[str, Listener]:
    """Listeners for `config`, not yet bound (`in_memory`: all of them plain listeners, to
    be bound in memory, QUIC ones included). On failure (a certificate or log file that
    cannot be opened) nothing is left open."""
    listeners: dict[str, Listener] = {}
    try:
        for name, lconf in config.listeners.items():
            builder = ChainBuilder(name, config, clusters, stats, state, route_tables or {})
            try:
                quic = lconf.protocol == "quic" and not in_memory
                listeners[name] = (QuicListener if quic else Listener)(name, lconf, builder)
            except BaseException:
                for access_log in builder.access_logs:
                    access_log.close()
                raise
    except BaseException:
        for listener in listeners.values():
            for access_log in listener.access_logs:
                access_log.close()
        raise
    return listeners


def drain_deadlines(server: ServerConfig) -> tuple[float, float]:
    """When draining connections are cut, and when those that have not begun a request
    yet (nor finished their TLS handshake) are: `server`'s drain timeout and grace from
    now, on trio's clock."""
    now = trio.current_time()
    return now + server.drain_timeout, now + server.drain_grace
