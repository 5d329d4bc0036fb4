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
from gateway.trio_util import leaves


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
        except (OSError, BaseExceptionGroup) as exc:
            # hypercorn binds inside a nursery of its own, so the OSError may come wrapped.
            errors = [e for e in leaves(exc) if isinstance(e, OSError)]
            if not errors:
                raise
            reason = errors[0].strerror or errors[0]
            raise StartupError(f"admin.address: cannot bind {admin.address}: {reason}") from None
        task_status.started(int(binds[0].rpartition(":")[2]))
