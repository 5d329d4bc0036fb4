"""Runs the admin app with hypercorn on Trio, inside the gateway's root nursery."""

import logging
from functools import partial

import hypercorn.config
import hypercorn.trio
import trio

from gateway.admin.app import AdminApp
from gateway.admin.asgi import App, bind_failure, for_hypercorn
from gateway.admin.history import StatsHistory
from gateway.admin.origin import SameOriginOnly
from gateway.config.model import Admin, is_loopback
from gateway.errors import StartupError
from gateway.observability.stats import StatsStore, describe
from gateway.observability.tasktree import annotate
from gateway.server.gateway import Gateway

log = logging.getLogger("gateway.admin")

#: How long the admin server has, at shutdown, to finish the answers it is writing.
_ADMIN_GRACE = 0.2

describe(
    "admin",
    {"rq_refused": "Admin requests refused (403) as another site's, or naming a DNS host."},
)


async def serve_admin(
    gw: Gateway, admin: Admin, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    history = StatsHistory(
        gw.stats,
        list(gw.clusters.clusters),
        hosts=lambda: ((c.name, h) for c in gw.clusters.clusters.values() for h in c.hosts),
        listeners=lambda: list(gw.listeners),
    )
    try:
        async with trio.open_nursery() as nursery:
            serve = partial(serve_admin_app, shutdown=gw.admin_shutdown)
            app = AdminApp(gw, history)
            port = await nursery.start(serve, app, admin, gw.stats, name="hypercorn")
            nursery.start_soon(history.run, name="admin stats history")
            task_status.started(port)
            await gw.admin_shutdown.wait()
            nursery.cancel_scope.deadline = trio.current_time() + _ADMIN_GRACE
    finally:
        gw.admin_stopped.set()


async def serve_admin_app(
    app: App,
    admin: Admin,
    stats: StatsStore,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serves an admin ASGI app (a gateway's, or a worker supervisor's) with hypercorn,
    to this host's tools and the admin's own pages only (`admin.rq_refused` counts the
    rest); a bind failure is a StartupError naming `admin.address`. Once `shutdown` is set,
    hypercorn stops gracefully: answers being written (POST /quitquitquit's) go out."""
    annotate("admin", address=str(admin.address))
    if not is_loopback(admin.address.host):
        log.warning(
            "admin endpoint on %s, reachable beyond this host: it has no authentication",
            admin.address,
        )
    config = hypercorn.config.Config()
    config.bind = [str(admin.address)]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = _ADMIN_GRACE
    trigger = shutdown.wait if shutdown is not None else None
    refused = stats.scope("admin", "admin").counter("rq_refused")
    guarded = for_hypercorn(SameOriginOnly(app, admin.address.host, refused))
    async with trio.open_nursery() as nursery:
        try:
            binds = await nursery.start(
                partial(
                    hypercorn.trio.serve, guarded, config, mode="asgi", shutdown_trigger=trigger
                ),
                name="hypercorn",
            )
        except (OSError, BaseExceptionGroup) as exc:
            if (reason := bind_failure(exc)) is None:
                raise
            raise StartupError(f"admin.address: cannot bind {admin.address}: {reason}") from None
        task_status.started(int(binds[0].rpartition(":")[2]))
