"""Runs the admin app with hypercorn on Trio, inside the gateway's root nursery."""

import logging
from functools import partial

import hypercorn.config
import hypercorn.trio
import trio

from gateway.admin.app import AdminApp
from gateway.config.model import Admin
from gateway.errors import StartupError
from gateway.server import Gateway
from gateway.tasktree import annotate


async def serve_admin(
    gw: Gateway, admin: Admin, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    annotate("admin", address=str(admin.address))
    config = hypercorn.config.Config()
    config.bind = [str(admin.address)]
    config.accesslog = None
    config.errorlog = logging.getLogger("gateway.admin")
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        try:
            binds = await nursery.start(
                partial(hypercorn.trio.serve, AdminApp(gw), config, mode="asgi"), name="hypercorn"
            )
        except OSError as exc:
            raise StartupError(f"admin.address: cannot bind {admin.address}: {exc}") from None
        task_status.started(int(binds[0].rpartition(":")[2]))
