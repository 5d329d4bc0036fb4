"""Admin endpoint handlers: each reads the gateway's public state and renders it."""

import json
import logging
import re
import time
from typing import Any

import attrs

from gateway.admin.asgi import Send
from gateway.clusters.host import HealthFlag, Host
from gateway.config.load import unstructure_config
from gateway.config.regex import Regex, RegexError, compile_regex
from gateway.errors import ConfigError, StartupError
from gateway.observability import stats as stats_format
from gateway.observability import tasktree
from gateway.observability.stats import StatsStore
from gateway.observability.task_query import TaskQuery
from gateway.server.gateway import Gateway
from gateway.server.reload import reload_from_file
from gateway.version import gateway_version

log = logging.getLogger("gateway.admin")

_LEVELS = ("trace", "debug", "info", "warning", "error", "critical", "off")
#: Config keys whose values are secrets (JWT signing secrets, TLS private keys, passwords):
#: /config_dump shows them as "[redacted]", whatever table they sit in.
_SECRET_KEY = re.compile(r"(^|[_-])(secret|password|token|authorization)$|[_-]key$", re.I)
REDACTED = "[redacted]"


class Query(dict[str, str]):
    """An admin request's query parameters: the last value of each name, as most
    endpoints read them, and every (name, value) pair in order for the ones that take a
    name more than once (/explain's `header=`)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


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

    async def send(self, send: Send, *, websocket: bool = False) -> None:
        """Sends this reply as an ASGI HTTP response (admin answers are never cached), or
        with `websocket` as the HTTP answer refusing a WebSocket handshake."""
        headers = [
            (b"content-type", self.content_type.encode()),
            (b"cache-control", b"no-cache, max-age=0"),
        ]
        kind = "websocket.http.response" if websocket else "http.response"
        await send({"type": f"{kind}.start", "status": self.status, "headers": headers})
        await send({"type": f"{kind}.body", "body": self.body})


def ready(gw: Gateway, query: dict[str, str]) -> Reply:
    if gw.draining:
        return Reply.text("DRAINING\n", 503)
    return Reply.text("LIVE\n")


def server_info(gw: Gateway, query: dict[str, str]) -> Reply:
    uptime = f"{int(time.time() - gw.started_at)}s"
    return Reply.json(
        {
            "version": gateway_version(),
            "state": "DRAINING" if gw.draining else "LIVE",
            "uptime_current_epoch": uptime,
            # No hot restart: this process is the only epoch.
            "uptime_all_epochs": uptime,
            "listeners": gw.listener_ports,
            "admin_port": gw.admin_port,
            "command_line_options": {
                "config_path": gw.config_path,
                # One Trio loop in one process serves everything (Envoy: --concurrency).
                "concurrency": 1,
            },
            "overload": gw.state.overload.describe(),
        }
    )


def _filter(query: dict[str, str]) -> Regex | Reply | None:
    pattern = query.get("filter")
    if not pattern:
        return None
    try:
        return compile_regex(pattern)
    except RegexError as exc:
        return Reply.text(f"invalid filter regex: {exc}\n", 400)


def _selected(store: StatsStore, query: dict[str, str]) -> list[stats_format.Stat] | Reply:
    name_filter = _filter(query)
    if isinstance(name_filter, Reply):
        return name_filter
    return store.select(name_filter, used_only="usedonly" in query)


def stats(gw: Gateway, query: dict[str, str]) -> Reply:
    return stats_of(gw.stats, query)


def stats_of(store: StatsStore, query: dict[str, str]) -> Reply:
    """/stats of a store (this process's, or the workers' added up by the supervisor)."""
    fmt = query.get("format", "text")
    if fmt == "prometheus":
        return prometheus_of(store, query)
    if fmt == "raw":  # for the supervisor of worker processes
        return Reply.json(store.export())
    selected = _selected(store, query)
    if isinstance(selected, Reply):
        return selected
    if fmt == "json":
        buckets = query.get("histogram_buckets") == "cumulative"
        return Reply.json(stats_format.render_json(selected, buckets))
    return Reply.text(stats_format.render_text(selected))


def stats_prometheus(gw: Gateway, query: dict[str, str]) -> Reply:
    return prometheus_of(gw.stats, query)


def prometheus_of(store: StatsStore, query: dict[str, str]) -> Reply:
    selected = _selected(store, query)
    if isinstance(selected, Reply):
        return selected
    body = stats_format.render_prometheus(selected).encode()
    return Reply(200, "text/plain; version=0.0.4; charset=utf-8", body)


def reset_counters(gw: Gateway, query: dict[str, str]) -> Reply:
    count = gw.stats.reset_counters()
    log.info("admin: %d counters reset", count)
    return Reply.text("OK\n")


def redact(data: Any) -> Any:
    """The config dump with the value of every secret-named key replaced."""
    if isinstance(data, dict):
        return {
            k: REDACTED
            if isinstance(k, str) and _SECRET_KEY.search(k) and data[k] is not None
            else redact(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


def config_dump(gw: Gateway, query: dict[str, str]) -> Reply:
    dump = redact(unstructure_config(gw.config))
    if gw.xds is not None:
        # Each xDS resource's version, source and last update, and a refused update's
        # reason (Envoy's dynamic_*/error_state).
        dump["dynamic_resources"] = gw.xds.dump()
    return Reply.json(dump)


def _host_health_status(host: Host) -> dict[str, bool | str]:
    """Envoy's HostHealthStatus: only the flags that are set appear."""
    status: dict[str, bool | str] = {"eds_health_status": "HEALTHY"}
    if HealthFlag.FAILED_ACTIVE_HC in host.health_flags:
        status["failed_active_health_check"] = True
    if HealthFlag.FAILED_OUTLIER_CHECK in host.health_flags:
        status["failed_outlier_check"] = True
    return status


def _host_checks(host: Host) -> dict[str, object]:
    """What Envoy's HostStatus lacks and a dashboard needs: the last active health check
    probe (when, and why it failed) and the host's outlier ejections."""
    out: dict[str, object] = {
        "outlier_detection": {
            "ejected": host.outlier.ejected_until is not None,
            "ejections_total": host.outlier.ejections_total,
        }
    }
    last = host.last_health_check
    if last is not None:
        out["last_health_check"] = {
            "time": round(last.time, 3),
            "passed": last.failure is None,
            "failure": last.failure,
        }
    return out


def clusters(gw: Gateway, query: dict[str, str]) -> Reply:
    if query.get("format") == "json":
        return Reply.json(
            {
                "cluster_statuses": [
                    {
                        "name": cluster.name,
                        "circuit_breakers": attrs.asdict(cluster.config.circuit_breakers),
                        "host_statuses": [
                            {
                                "address": str(host.address),
                                "stats": attrs.asdict(host.stats),
                                "health_status": _host_health_status(host),
                                "weight": host.weight,
                                "pool": attrs.asdict(host.pool.statistics()),
                                **_host_checks(host),
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
        for limit, value in attrs.asdict(cluster.config.circuit_breakers).items():
            lines.append(f"{name}::default_priority::{limit}::{value}")
        per_host = cluster.config.max_connections_per_host
        lines.append(f"{name}::default_priority::max_connections_per_host::{per_host}")
        for host in cluster.hosts:
            prefix = f"{name}::{host.address}"
            for stat, value in sorted(attrs.asdict(host.stats).items()):
                lines.append(f"{prefix}::{stat}::{value}")
            pool = host.pool.statistics()
            lines.append(f"{prefix}::pool_idle::{pool.idle}")
            lines.append(f"{prefix}::pool_waiting::{pool.waiting}")
            lines.append(f"{prefix}::health_flags::{host.health_flag_names()}")
            lines.append(f"{prefix}::weight::{host.weight}")
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
    try:
        task_query = TaskQuery.from_params(query)
    except ValueError as exc:
        return Reply.text(f"{exc}\n", 400)
    tree = task_query.apply(tasktree.snapshot())
    if query.get("format") == "text":
        return Reply.text(tasktree.render_text(tree) + "\n")
    return Reply.json(tree)


def task_tree_json(query: TaskQuery) -> str:
    """One /tasks/ws message: the time and the tree, narrowed as the client asked."""
    return json.dumps({"time": time.time(), "tree": query.apply(tasktree.snapshot())})


def cancel_task(gw: Gateway, task_id: str) -> Reply:
    """`POST /tasks/ID/cancel`: cancels a connection's or stream's cancel scope."""
    if not task_id.isdigit():
        return Reply.text(f"task id must be a number, got {task_id!r}\n", 400)
    try:
        annotation = tasktree.cancel(int(task_id))
    except tasktree.NotCancellable as exc:
        return Reply.text(f"{exc}\n", 409)
    except LookupError as exc:
        return Reply.text(f"{exc} (finished, or never existed)\n", 404)
    fields = ", ".join(f"{k}={v}" for k, v in annotation.fields.items())
    log.warning("admin: cancelling task %s [%s] (%s)", task_id, annotation.kind, fields)
    return Reply.text(f"cancelled task {task_id} ({annotation.kind})\n")


def drain_listeners(gw: Gateway, query: dict[str, str]) -> Reply:
    """Envoy's /drain_listeners: stop accepting and let in-flight requests finish, without
    exiting; `?graceful` is accepted, as the gateway's drain is always graceful."""
    if not gw.draining:
        log.info("admin: draining listeners for up to %ss", gw.config.server.drain_timeout)
    gw.drain_listeners()
    return Reply.text("OK\n")


def healthcheck_fail(gw: Gateway, query: dict[str, str]) -> Reply:
    gw.state.healthcheck_failed = True
    return Reply.text("OK\n")


def healthcheck_ok(gw: Gateway, query: dict[str, str]) -> Reply:
    gw.state.healthcheck_failed = False
    return Reply.text("OK\n")


def quit(gw: Gateway, query: dict[str, str]) -> Reply:
    gw.request_shutdown()
    return Reply.text("OK\n")


async def reload(gw: Gateway) -> Reply:
    """POST /reload: 200 with what changed, or 400 with every config error (the running
    config stays)."""
    try:
        changes = await reload_from_file(gw)
    except ConfigError as exc:
        return Reply.json({"reloaded": False, "errors": exc.errors}, 400)
    except StartupError as exc:
        return Reply.json({"reloaded": False, "errors": [str(exc)]}, 400)
    return Reply.json({"reloaded": True, "changes": changes, "reloads": gw.reloads})
