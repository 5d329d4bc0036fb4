"""Admin endpoint handlers: each reads the gateway's public state and renders it."""

import html
import json
import logging
import re
import time
from importlib.metadata import PackageNotFoundError, version

import attrs

from gateway import stats as stats_format
from gateway import tasktree
from gateway.config.load import unstructure_config
from gateway.server import Gateway

_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")


@attrs.frozen
class Reply:
    status: int
    content_type: str
    body: bytes

    @classmethod
    def text(cls, body: str, status: int = 200) -> "Reply":
        return cls(status, "text/plain; charset=utf-8", body.encode())

    @classmethod
    def json(cls, data: object, status: int = 200) -> "Reply":
        return cls(status, "application/json", (json.dumps(data, indent=2) + "\n").encode())


def _gateway_version() -> str:
    try:
        return version("gateway")
    except PackageNotFoundError:
        return "dev"


def index(endpoints: list[tuple[str, str]]) -> Reply:
    rows = "\n".join(
        f'<tr><td><a href="{html.escape(p)}">{html.escape(p)}</a></td>'
        f"<td>{html.escape(h)}</td></tr>"
        for p, h in endpoints
    )
    page = (
        "<!doctype html><html><head><title>gateway admin</title></head><body>"
        f"<h1>gateway admin</h1><table>{rows}</table></body></html>\n"
    )
    return Reply(200, "text/html; charset=utf-8", page.encode())


def ready(gw: Gateway, query: dict[str, str]) -> Reply:
    if gw.draining:
        return Reply.text("DRAINING\n", 503)
    return Reply.text("LIVE\n")


def server_info(gw: Gateway, query: dict[str, str]) -> Reply:
    uptime = int(time.time() - gw.started_at)
    return Reply.json(
        {
            "version": _gateway_version(),
            "state": "DRAINING" if gw.draining else "LIVE",
            "uptime_current_epoch": f"{uptime}s",
            "listeners": gw.listener_ports,
            "admin_port": gw.admin_port,
        }
    )


def _filter(query: dict[str, str]) -> re.Pattern[str] | Reply | None:
    pattern = query.get("filter")
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        return Reply.text(f"invalid filter regex: {exc}\n", 400)


def stats(gw: Gateway, query: dict[str, str]) -> Reply:
    fmt = query.get("format", "text")
    if fmt == "prometheus":
        return stats_prometheus(gw, query)
    name_filter = _filter(query)
    if isinstance(name_filter, Reply):
        return name_filter
    if fmt == "json":
        return Reply.json(stats_format.render_json(gw.stats, name_filter))
    return Reply.text(stats_format.render_text(gw.stats, name_filter))


def stats_prometheus(gw: Gateway, query: dict[str, str]) -> Reply:
    body = stats_format.render_prometheus(gw.stats).encode()
    return Reply(200, "text/plain; version=0.0.4; charset=utf-8", body)


def config_dump(gw: Gateway, query: dict[str, str]) -> Reply:
    return Reply.json(unstructure_config(gw.config))


def clusters(gw: Gateway, query: dict[str, str]) -> Reply:
    if query.get("format") == "json":
        return Reply.json(
            {
                "cluster_statuses": [
                    {
                        "name": cluster.name,
                        "host_statuses": [
                            {
                                "address": str(host.address),
                                "stats": attrs.asdict(host.stats),
                                "health_status": "HEALTHY",
                                "weight": 1,
                                "pool": attrs.asdict(host.pool.statistics()),
                            }
                            for host in cluster.hosts
                        ],
                    }
                    for cluster in gw.clusters.clusters.values()
                ]
            }
        )
    lines = []
    for cluster in gw.clusters.clusters.values():
        name = cluster.name
        lines.append(f"{name}::observability_name::{name}")
        limit = cluster.config.max_connections_per_host
        lines.append(f"{name}::default_priority::max_connections_per_host::{limit}")
        for host in cluster.hosts:
            prefix = f"{name}::{host.address}"
            for stat, value in sorted(attrs.asdict(host.stats).items()):
                lines.append(f"{prefix}::{stat}::{value}")
            pool = host.pool.statistics()
            lines.append(f"{prefix}::pool_idle::{pool.idle}")
            lines.append(f"{prefix}::pool_waiting::{pool.waiting}")
            lines.append(f"{prefix}::health_flags::healthy")
            lines.append(f"{prefix}::weight::1")
    return Reply.text("\n".join(lines) + "\n")


def listeners(gw: Gateway, query: dict[str, str]) -> Reply:
    items = [(name, lst.config.address.host, lst.port) for name, lst in gw.listeners.items()]
    if query.get("format") == "json":
        return Reply.json(
            {
                "listener_statuses": [
                    {
                        "name": n,
                        "local_address": {"socket_address": {"address": h, "port_value": p}},
                    }
                    for n, h, p in items
                ]
            }
        )
    return Reply.text("".join(f"{n}::{h}:{p}\n" for n, h, p in items))


def _gateway_loggers() -> dict[str, logging.Logger]:
    known = logging.root.manager.loggerDict
    names = ["gateway", *sorted(n for n in known if n.startswith("gateway."))]
    return {n: logging.getLogger(n) for n in names}


def _level_name(logger: logging.Logger) -> str:
    level = logger.getEffectiveLevel()
    return "off" if level > logging.CRITICAL else logging.getLevelName(level).lower()


def _to_level(name: str) -> int | None:
    name = name.lower()
    if name == "off":
        return logging.CRITICAL + 10
    if name == "trace":
        return logging.DEBUG
    return logging.getLevelNamesMapping().get(name.upper()) if name in _LEVELS else None


def logging_get(gw: Gateway, query: dict[str, str]) -> Reply:
    loggers = _gateway_loggers()
    body = "active loggers:\n" + "".join(
        f"  {name}: {_level_name(logger)}\n" for name, logger in loggers.items()
    )
    return Reply.text(body)


def logging_post(gw: Gateway, query: dict[str, str]) -> Reply:
    loggers = _gateway_loggers()
    for key, value in query.items():
        level = _to_level(value)
        if level is None:
            return Reply.text(f"unknown level {value!r}; use one of {', '.join(_LEVELS)}\n", 400)
        if key == "level":
            for logger in loggers.values():
                logger.setLevel(level)
        elif key in loggers:
            loggers[key].setLevel(level)
        else:
            return Reply.text(f"unknown logger {key!r}\n", 404)
    return logging_get(gw, query)


def tasks(gw: Gateway, query: dict[str, str]) -> Reply:
    tree = tasktree.snapshot()
    if query.get("format") == "text":
        return Reply.text(tasktree.render_text(tree) + "\n")
    return Reply.json(tree)


def task_tree_json() -> str:
    """One /tasks/ws message: the time and the whole tree."""
    return json.dumps({"time": time.time(), "tree": tasktree.snapshot()})


def healthcheck_fail(gw: Gateway, query: dict[str, str]) -> Reply:
    gw.state.healthcheck_failed = True
    return Reply.text("OK\n")


def healthcheck_ok(gw: Gateway, query: dict[str, str]) -> Reply:
    gw.state.healthcheck_failed = False
    return Reply.text("OK\n")


def quit(gw: Gateway, query: dict[str, str]) -> Reply:
    gw.request_shutdown()
    return Reply.text("OK\n")
