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
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from gateway.access_log import AccessLogger
from gateway.clusters.manager import ClusterManager
from gateway.config.model import GatewayConfig
from gateway.listeners.filter_chain import ChainBuilder
from gateway.listeners.listener import Listener
from gateway.server_state import ServerState
from gateway.stats import StatsStore
from gateway.tasktree import set_enabled as set_task_tree
from gateway.trio_util import raise_single

log = logging.getLogger("gateway.server")


class Gateway:
    """A running gateway: its config, stats, clusters, listeners and bound ports."""

    def __init__(self, config: GatewayConfig, config_path: str | None = None) -> None:
        self.config = config
        #: The file the config came from, if any (for /server_info).
        self.config_path = config_path
        self.state = ServerState()
        self.started_at = time.time()
        self.stats = StatsStore(
            [(re.compile(b.match), tuple(b.buckets)) for b in config.server.histogram_buckets]
        )
        self.clusters = ClusterManager(config, self.stats)
        self.access_logs: list[AccessLogger] = []
        self.listeners: dict[str, Listener] = {}
        for name, lconf in config.listeners.items():
            builder = ChainBuilder(name, config, self.clusters, self.stats, self.state)
            listener = self.listeners[name] = Listener(name, lconf, builder)
            self.access_logs += listener.access_logs
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

    def drain_listeners(self) -> None:
        """Starts the drain (admin `/drain_listeners`, or the first step of a shutdown):
        listeners stop accepting, in-flight requests may finish until the drain timeout."""
        if self.state.draining:
            return  # the first drain's deadline stands
        self.state.draining = True
        deadline = trio.current_time() + self.config.server.drain_timeout
        for listener in self.listeners.values():
            listener.drain(deadline)

    async def drain(self) -> None:
        """Drains the listeners and waits for in-flight requests, up to the drain timeout."""
        self.drain_listeners()
        for stopped in self._stopped.values():
            await stopped.wait()


@asynccontextmanager
async def open_gateway(
    config: GatewayConfig, config_path: str | None = None
) -> AsyncIterator[Gateway]:
    """Runs the whole gateway inside the caller's task; drains and stops on exit.

    Raises StartupError if a listener cannot bind. On normal exit the gateway drains
    gracefully; if the body raises (or is cancelled), everything is cancelled at once.
    """
    from gateway.admin.serve import serve_admin  # admin imports the server's types

    set_task_tree(config.admin is None or config.admin.task_tree)
    gw = Gateway(config, config_path)
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
