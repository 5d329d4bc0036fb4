"""Reloading the config file: on SIGHUP, on `POST /reload`, or when the file changes.

The file is parsed and validated first; a config with errors is rejected with every error
listed and the running config keeps serving. Only a valid config reaches
`Gateway.reload`, which swaps it in without dropping a request.

Parsing, validating and composing with xDS resources is CPU work that grows with the
config (and reads the files it names), so it runs in a worker thread: the event loop
keeps serving traffic and admin meanwhile. Only the swap itself runs on the loop.
"""

import contextlib
import logging
from functools import partial

import trio

from gateway.config.load import load_config
from gateway.config.model import GatewayConfig
from gateway.config.watch import file_signature, watch
from gateway.errors import ConfigError, StartupError
from gateway.observability.tasktree import annotate
from gateway.server.gateway import Gateway

log = logging.getLogger("gateway.reload")


async def reload_from_file(gw: Gateway) -> list[str]:
    """Reloads gw's config file; raises ConfigError (with every problem) or StartupError."""
    if gw.config_path is None:
        raise ConfigError(["the gateway was not started from a config file"])
    try:
        config = await trio.to_thread.run_sync(load_config, gw.config_path)
        if gw.worker is not None:
            config = gw.worker.apply(config)
        return await apply_config(gw, config)
    except (ConfigError, StartupError) as exc:
        errors = exc.errors if isinstance(exc, ConfigError) else [str(exc)]
        log.error("reload rejected, the running config stays:\n  %s", "\n  ".join(errors))
        raise


async def apply_config(gw: Gateway, static: GatewayConfig) -> list[str]:
    """Takes `static` (the config file's content) plus, with `[dynamic]`, the xDS
    resources as they are now; raises ConfigError or StartupError, changing nothing."""
    # One update at a time: each ACKs the xDS resources it composed, not newer ones that
    # came in while it was composing in its thread.
    async with gw.update_lock:
        if gw.xds is None:
            changes = await gw.reload(static)
        else:
            composed = await gw.xds.compose_in_thread(static)
            changes = await gw.reload(composed.config) if composed.config != gw.config else []
            gw.xds.apply_assignments(gw.clusters, composed)
            gw.xds.accept(composed)
        gw.static_config = static
        return changes


async def reload_dynamic(gw: Gateway) -> None:
    """The xDS directory changed: apply it (ACK) or refuse it and keep the last good
    config (NACK)."""
    assert gw.xds is not None
    try:
        await apply_config(gw, gw.static_config)
    except (ConfigError, StartupError) as exc:
        gw.xds.reject(exc.errors if isinstance(exc, ConfigError) else [str(exc)])
    else:
        log.info("xDS update from %s applied (ACK)", gw.xds.source)


async def watch_config(gw: Gateway, path: str, last: bytes | None) -> None:
    """Reloads whenever the file's content differs from `last` (what was loaded)."""
    annotate("config watcher", path=path)

    async def reload() -> None:
        with contextlib.suppress(ConfigError, StartupError):  # logged; it may be fixed
            await reload_from_file(gw)

    await watch(partial(file_signature, path), last, reload)
