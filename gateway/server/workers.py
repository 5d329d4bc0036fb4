"""The processes of `gateway serve` with `[server] workers` > 1: the supervisor's
(`serve_supervised`, supervision itself in supervisor.py) and each worker's (`run_worker`:
one `open_gateway` on the ports the supervisor chose). They sit above the supervisor and
its admin endpoint, which reads and drives it, and start both.
"""

import json
import logging
import os
import signal

import trio

from gateway.admin.supervisor import serve_supervisor_admin
from gateway.config.load import load_config
from gateway.config.model import GatewayConfig
from gateway.errors import ConfigError, StartupError
from gateway.io.trio_util import raise_single
from gateway.server.gateway import WorkerRole
from gateway.server.run import open_gateway
from gateway.server.supervisor import Supervisor

log = logging.getLogger("gateway.workers")

#: How often a worker checks that its supervisor is still there.
_ORPHAN_CHECK = 1.0


async def serve_supervised(config: GatewayConfig, config_path: str) -> None:
    """`gateway serve` with workers: supervises until SIGINT/SIGTERM, reloads on SIGHUP."""
    supervisor = Supervisor(config, config_path, serve_supervisor_admin)
    try:
        await _supervise(supervisor)
    except BaseExceptionGroup as group:  # a failed start-up: StartupError, for the CLI
        raise_single(group)
    log.info("stopped")


async def _supervise(supervisor: Supervisor) -> None:
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:

            async def on_signal() -> None:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        log.info("received SIGHUP: reloading %s", supervisor.config_path)
                        try:
                            await supervisor.reload()
                        except (ConfigError, StartupError) as exc:
                            log.error("reload rejected: %s", exc)
                        continue
                    log.info("received %s: draining the workers", signal.Signals(signum).name)
                    supervisor.shutdown_requested.set()
                    return

            nursery.start_soon(on_signal, name="signal handler")
            await supervisor.run()
            nursery.cancel_scope.cancel()


async def run_worker(config_path: str, index: int, ports: dict[str, int]) -> None:
    """One worker process: a gateway on the shared ports until SIGTERM/SIGINT."""
    role = WorkerRole(index, ports)
    config = role.apply(load_config(config_path))
    async with open_gateway(config, config_path, role) as gw:
        print(json.dumps({"admin_port": gw.admin_port, "pid": os.getpid()}), flush=True)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_exit_when_orphaned, nursery.cancel_scope, index)
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()


async def _exit_when_orphaned(scope: trio.CancelScope, index: int) -> None:
    """A supervisor killed outright (SIGKILL) cannot stop its workers: each notices it
    was orphaned and drains by itself. (PR_SET_PDEATHSIG would fire when the *thread*
    that started the worker exits, and Trio starts processes from worker threads that
    come and go.)"""
    supervisor = os.getppid()
    while True:
        await trio.sleep(_ORPHAN_CHECK)
        if os.getppid() != supervisor:
            log.warning("worker %d: the supervisor is gone; draining", index)
            scope.cancel()
            return
