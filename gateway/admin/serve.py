"""Runs the admin app with hypercorn on Trio, inside the gateway's root nursery."""

import logging
from functools import partial

import hypercorn.config
import hypercorn.trio
import trio

from gateway.admin.app import AdminApp
from gateway.admin.history import StatsHistory
from gateway.config.model import Admin, is_loopback
from gateway.errors import StartupError
from gateway.server import Gateway
from gateway.tasktree import annotate
from gateway.trio_util import leaves

log = logging.getLogger("gateway.admin")


async def serve_admin(
    gw: Gateway, admin: Admin, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    annotate("admin", address=str(admin.address))
    if not is_loopback(admin.address.host):
        log.warning(
            "admin endpoint on %s, reachable beyond this host: it has no authentication",
            admin.address,
        )
    history = StatsHistory(gw.stats, list(gw.clusters.clusters))
    config = hypercorn.config.Config()
    config.bind = [str(admin.address)]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        try:
            binds = await nursery.start(
                partial(hypercorn.trio.serve, AdminApp(gw, history), config, mode="asgi"),
                name="hypercorn",
            )
        except (OSError, BaseExceptionGroup) as exc:
            # hypercorn binds inside a nursery of its own, so the OSError may come wrapped.
            errors = [e for e in leaves(exc) if isinstance(e, OSError)]
            if not errors:
                raise
            reason = errors[0].strerror or errors[0]
            raise StartupError(f"admin.address: cannot bind {admin.address}: {reason}") from None
        nursery.start_soon(history.run, name="admin stats history")
        task_status.started(int(binds[0].rpartition(":")[2]))
