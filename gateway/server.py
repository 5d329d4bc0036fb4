"""The gateway as one Trio nursery: `async with open_gateway(config) as gw:`.

Task tree (see docs/architecture.md):

    open_gateway nursery
    ├── cluster manager            (one reaper task per cluster)
    ├── access log flusher         (one per access log)
    ├── listener NAME              (nursery: accept tasks, then "conn PEER" tasks)
    │   └── conn 127.0.0.1:51234   (per request: "stream N GET /path" + "downstream reader")
    └── admin                      (hypercorn serving the admin app)

Shutdown is a drain, as in hypercorn's worker_serve: stop accepting, let in-flight requests
finish until `server.drain_timeout` (a deadline on each listener's connection nursery),
then cancel what is left (admin, reapers, flushers) and close the pools.
"""

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from gateway.access_log import AccessLogger
from gateway.clusters.manager import ClusterManager
from gateway.config.model import GatewayConfig
from gateway.errors import StartupError
from gateway.http.conn_manager import HttpConnectionManager
from gateway.listeners.listener import Listener
from gateway.server_state import ServerState
from gateway.stats import StatsStore
from gateway.trio_util import raise_single

log = logging.getLogger("gateway.server")


class Gateway:
    """A running gateway: its config, stats, clusters, listeners and bound ports."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.state = ServerState()
        self.started_at = time.time()
        self.stats = StatsStore()
        self.clusters = ClusterManager(config, self.stats)
        self.access_logs: list[AccessLogger] = []
        self.listeners: dict[str, Listener] = {}
        for name, lconf in config.listeners.items():
            access_log = None
            if lconf.access_log is not None:
                try:
                    access_log = AccessLogger(lconf.access_log)
                except OSError as exc:
                    raise StartupError(
                        f"listeners.{name}.access_log.path: cannot open "
                        f"{lconf.access_log.path}: {exc.strerror or exc}"
                    ) from None
            if access_log is not None:
                self.access_logs.append(access_log)
            hcm = HttpConnectionManager(
                name, lconf, config, self.clusters, self.stats, access_log, self.state
            )
            self.listeners[name] = Listener(name, lconf, hcm, self.stats)
        self.admin_port: int | None = None
        #: Set by POST /quitquitquit (and by `gateway serve` on SIGINT/SIGTERM).
        self.shutdown_requested = trio.Event()
        self._stopped: dict[str, trio.Event] = {}

    @property
    def draining(self) -> bool:
        return self.state.draining

    @property
    def listener_ports(self) -> dict[str, int]:
        """Bound ports by listener name (useful when the config asked for port 0)."""
        return {name: lst.port for name, lst in self.listeners.items() if lst.port is not None}

    def request_shutdown(self) -> None:
        self.shutdown_requested.set()

    async def _run_listener(
        self, listener: Listener, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        stopped = self._stopped[listener.name] = trio.Event()
        try:
            await listener.run(task_status=task_status)
        finally:
            stopped.set()

    async def drain(self) -> None:
        """Stops accepting and waits for in-flight requests, up to the drain timeout."""
        self.state.draining = True
        deadline = trio.current_time() + self.config.server.drain_timeout
        for listener in self.listeners.values():
            listener.drain(deadline)
        for stopped in self._stopped.values():
            await stopped.wait()


@asynccontextmanager
async def open_gateway(config: GatewayConfig) -> AsyncIterator[Gateway]:
    """Runs the whole gateway inside the caller's task; drains and stops on exit.

    Raises StartupError if a listener cannot bind. On normal exit the gateway drains
    gracefully; if the body raises (or is cancelled), everything is cancelled at once.
    """
    from gateway.admin.serve import serve_admin  # admin imports the server's types

    gw = Gateway(config)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(gw.clusters.run, name="cluster manager")
            for task_name, job in gw.state.background:
                nursery.start_soon(job, name=task_name)
            for access_log in gw.access_logs:
                nursery.start_soon(access_log.run_flusher, name="access log flusher")
            for name, listener in gw.listeners.items():
                await nursery.start(gw._run_listener, listener, name=f"listener {name}")
            if config.admin is not None:
                gw.admin_port = await nursery.start(serve_admin, gw, config.admin, name="admin")
            log.info("gateway started: listeners %s, admin %s", gw.listener_ports, gw.admin_port)
            yield gw
            await gw.drain()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_single(group)
