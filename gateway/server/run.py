"""The gateway as one Trio nursery: `async with open_gateway(config) as gw:`.

Task tree (see docs/architecture.md):

    open_gateway nursery
    ├── cluster manager            (cluster NAME -> host ADDRESS -> pools, health checker)
    ├── filter background jobs     (e.g. JWKS refresh), one group per config
    ├── resource monitor           (with `[overload] max_rss`: reads the RSS, sets actions)
    ├── stats flush                (with `[[stats_sinks]]`: statsd/DogStatsD every interval)
    ├── listener NAME              (access log flushers, accept tasks, "conn PEER" tasks)
    │   └── conn 127.0.0.1:51234   (per request: a "stream N GET /path" task)
    ├── config watcher             (with `[server] watch = true`)
    └── admin                      (hypercorn serving the admin app)

Shutdown is a drain, as in hypercorn's worker_serve: stop accepting, let in-flight requests
finish until `server.drain_timeout` (a deadline on each listener's connection nursery),
then cancel what is left (admin, clusters, background jobs) and close the pools. A reload
(`Gateway.reload`) is the same dance for one config generation while the next serves.

This sits above both the `Gateway` and its admin endpoint, which reads and drives it.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio

from gateway.admin.serve import serve_admin
from gateway.config.model import GatewayConfig
from gateway.config.watch import file_signature
from gateway.errors import ConfigError, StartupError
from gateway.io.trio_util import raise_single
from gateway.observability.stats_flush import StatsFlusher, run_stats_flush
from gateway.observability.stats_sink import UdpSink
from gateway.observability.tasktree import set_enabled as set_task_tree
from gateway.server.gateway import Gateway, WorkerRole
from gateway.server.reload import reload_dynamic, watch_config
from gateway.xds.ads_source import XdsAdsSource
from gateway.xds.compose import XdsState
from gateway.xds.file_source import XdsFileSource
from gateway.xds.rest_source import XdsRestSource

log = logging.getLogger("gateway.server")


@asynccontextmanager
async def open_gateway(
    config: GatewayConfig, config_path: str | None = None, worker: WorkerRole | None = None
) -> AsyncIterator[Gateway]:
    """Runs the whole gateway inside the caller's task; drains and stops on exit.

    Raises StartupError if a listener cannot bind. On normal exit the gateway drains
    gracefully; if the body raises (or is cancelled), everything is cancelled at once.
    """
    set_task_tree(config.admin is None or config.admin.task_tree)
    xds: XdsState | None = None
    if config.dynamic.path is not None:
        xds = XdsFileSource(config.dynamic.path)
    elif config.dynamic.rest is not None:
        xds = XdsRestSource(config.dynamic)  # nothing yet: it warms once the clusters run
    elif config.dynamic.ads is not None:
        xds = XdsAdsSource(config.dynamic)
    composed = None
    if xds is not None:
        try:
            composed = xds.compose(config)
        except ConfigError as exc:
            raise StartupError("xDS resources refused: " + "; ".join(exc.errors)) from None
    gw = Gateway(composed.config if composed else config, config_path, worker)
    gw.static_config, gw.xds = config, xds
    if isinstance(xds, XdsRestSource | XdsAdsSource):
        xds.bind(gw.clusters)
    try:
        async with trio.open_nursery() as nursery:
            gw.nursery = nursery
            for listener in gw.listeners.values():
                await listener.bind(reuse_port=worker is not None)
            await nursery.start(gw.clusters.run, name="cluster manager")
            if xds is not None and composed is not None:
                xds.apply_assignments(gw.clusters, composed)
                xds.accept(composed)
                nursery.start_soon(xds.watch, partial(reload_dynamic, gw), name="xds source")
            gw.start_background()
            gw.state.overload.start(nursery)
            _start_stats_flush(gw, nursery)
            if gw.trace_exporter is not None:
                nursery.start_soon(gw.trace_exporter.run, name="trace exporter")
            for listener in gw.listeners.values():
                await gw.start_listener(listener)
            if config.admin is not None:
                gw.admin_port = await nursery.start(serve_admin, gw, config.admin, name="admin")
            if config.server.watch and config_path is not None:
                loaded = file_signature(config_path)
                nursery.start_soon(watch_config, gw, config_path, loaded, name="config watcher")
            what = "gateway" if worker is None else f"worker {worker.index}"
            log.info("%s started: listeners %s, admin %s", what, gw.listener_ports, gw.admin_port)
            yield gw
            await gw.drain()
            if gw.trace_exporter is not None:
                # The drained requests' last spans, while the collector cluster still runs.
                with trio.move_on_after(gw.config.server.drain_grace):
                    await gw.trace_exporter.flush()
            if config.admin is not None:
                gw.admin_shutdown.set()
                await gw.admin_stopped.wait()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_single(group)


def _start_stats_flush(gw: Gateway, nursery: trio.Nursery) -> None:
    """Flushes to the `[[stats_sinks]]`, if any. A worker sends only its histograms'
    samples: its supervisor sends the counters and gauges of all workers, added up."""
    config = gw.config
    if not config.stats_sinks:
        return
    sinks = [UdpSink(sink, i, gw.stats) for i, sink in enumerate(config.stats_sinks)]
    flush = partial(
        run_stats_flush,
        StatsFlusher(sinks),
        gw.stats,
        config.server.stats_flush_interval,
        counters_and_gauges=gw.worker is None,
    )
    nursery.start_soon(flush, name="stats flush")
