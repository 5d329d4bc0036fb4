"""Process-wide state that filters and the admin endpoint share."""

from collections.abc import Awaitable, Callable

import attrs

from gateway.observability.tracing.tracer import Tracer
from gateway.server.overload import OverloadManager

BackgroundTask = Callable[[], Awaitable[None]]


@attrs.define
class ServerState:
    #: `[overload]`: the connection cap and the actions the data path checks.
    overload: OverloadManager
    #: Set when the gateway starts draining (SIGTERM, /quitquitquit).
    draining: bool = False
    #: Set by POST /healthcheck/fail, cleared by POST /healthcheck/ok (as in Envoy): the
    #: health_check filter then fails, so load balancers stop sending traffic.
    healthcheck_failed: bool = False
    #: Long-running jobs components ask for (a filter refreshing its keys) while a config
    #: is built: the gateway takes and starts them once the clusters are up, and cancels
    #: them a drain timeout after a reload replaced that config, or at shutdown.
    background: list[tuple[str, BackgroundTask]] = attrs.Factory(list)
    #: `[tracing]`: what starts each request's trace; None without it.
    tracer: Tracer | None = None
    #: The bound UDP port of each QUIC listener, by name: what `advertise_http3` names.
    http3_ports: dict[str, int] = attrs.Factory(dict)
