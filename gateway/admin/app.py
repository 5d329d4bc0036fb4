"""The admin ASGI app: a table of endpoints and the ASGI plumbing around it."""

import inspect
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import attrs
import trio

from gateway.admin import dashboard, views
from gateway.admin.asgi import Receive, Scope, Send, complete_lifespan
from gateway.admin.explain import explain_view
from gateway.admin.history import StatsHistory
from gateway.admin.views import Query, Reply
from gateway.config.load import parse_duration
from gateway.observability.task_query import TaskQuery
from gateway.server.gateway import Gateway


@attrs.frozen
class Endpoint:
    path: str
    #: Answers at once, or (an async handler, e.g. /reload) when its work is done.
    handler: Callable[[Gateway, Query], Reply | Awaitable[Reply]]
    help: str
    mutates: bool = False


_ENDPOINTS = (
    Endpoint("/ready", views.ready, "LIVE (200) or DRAINING (503)"),
    Endpoint("/server_info", views.server_info, "version, state, uptime, config path"),
    Endpoint("/stats", views.stats, "all stats; ?filter=REGEX, ?usedonly, ?format=json|prometheus"),
    Endpoint(
        "/stats/prometheus", views.stats_prometheus, "Prometheus text format; ?filter, ?usedonly"
    ),
    Endpoint("/config_dump", views.config_dump, "the effective configuration as JSON"),
    Endpoint("/clusters", views.clusters, "upstream hosts and their stats; ?format=json"),
    Endpoint("/listeners", views.listeners, "listeners and bound addresses; ?format=json"),
    Endpoint("/logging", views.logging_get, "logger levels (POST ?level= or ?LOGGER=LEVEL)"),
    Endpoint(
        "/tasks",
        views.tasks,
        "the live task tree; ?format=text, ?listener, ?cluster, ?older_than, ?state, ?sort=age",
    ),
    Endpoint("/tasks/ws", views.tasks, "WebSocket: the task tree, then updates (?interval=1s)"),
    Endpoint(
        "/explain",
        explain_view,
        "what the gateway would do with a request and why: ?url=URL&method=&header=NAME:VALUE"
        "&source=&sni=&alpn=&listener=; ?format=text",
    ),
    Endpoint(
        "/healthcheck/fail", views.healthcheck_fail, "fail health checks (POST)", mutates=True
    ),
    Endpoint(
        "/healthcheck/ok", views.healthcheck_ok, "pass health checks again (POST)", mutates=True
    ),
    Endpoint(
        "/drain_listeners", views.drain_listeners, "stop accepting, drain (POST)", mutates=True
    ),
    Endpoint("/reset_counters", views.reset_counters, "set counters to 0 (POST)", mutates=True),
    Endpoint("/quitquitquit", views.quit, "drain and exit (POST)", mutates=True),
    Endpoint(
        "/reload",
        lambda gw, q: views.reload(gw),
        "re-read the config file and apply it without dropping requests (POST)",
        mutates=True,
    ),
)
_CANCEL = re.compile(r"^/tasks/([^/]+)/cancel$")


class AdminApp:
    def __init__(self, gw: Gateway, history: StatsHistory) -> None:
        self._gw = gw
        endpoints = (
            Endpoint("/", lambda gw, q: dashboard.page(help_), "dashboard and endpoint list"),
            Endpoint(
                "/stats/history",
                lambda gw, q: Reply.json(
                    history.export() if q.get("format") == "raw" else history.render()
                ),
                "per cluster rate and latency, per host and listener counts, last 5 minutes",
            ),
            *_ENDPOINTS,
        )
        self._by_path = {e.path: e for e in endpoints}
        help_: list[tuple[str, str, bool]] = []
        for e in endpoints:
            help_.append((e.path, e.help, e.mutates))
            if e.path == "/tasks/ws":
                help_.append(("/tasks/ID/cancel", "cancel a connection or stream (POST)", True))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        reply = await self._dispatch(scope)
        await reply.send(send)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def tree_message(task_query: TaskQuery) -> str:
            return views.task_tree_json(task_query)

        await serve_task_tree_websocket(scope, receive, send, tree_message)

    async def _dispatch(self, scope: Scope) -> Reply:
        path = scope["path"].rstrip("/") or "/"
        endpoint = self._by_path.get(path)
        query = Query(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
        method = scope["method"]
        if endpoint is None and (cancel := _CANCEL.match(path)):
            if method != "POST":
                return Reply.text(f"{path} requires POST\n", 405)
            return views.cancel_task(self._gw, cancel.group(1))
        if endpoint is None:
            return Reply.text(f"no admin endpoint {path}; see /\n", 404)
        if path == "/logging" and method == "POST":
            return views.logging_post(self._gw, query)
        if endpoint.mutates and method != "POST":
            return Reply.text(f"{path} requires POST\n", 405)
        if method not in ("GET", "HEAD", "POST"):
            return Reply.text("method not allowed\n", 405)
        reply = endpoint.handler(self._gw, query)
        return await reply if inspect.isawaitable(reply) else reply


async def serve_task_tree_websocket(
    scope: Scope,
    receive: Receive,
    send: Send,
    tree_message: Callable[[TaskQuery], Awaitable[str]],
) -> None:
    """`/tasks/ws`: the task tree now, then again every `?interval=` (default 1s)."""
    await receive()  # websocket.connect
    # Accept first: a close code only reaches a client on an accepted WebSocket.
    await send({"type": "websocket.accept"})
    query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
    if scope["path"].rstrip("/") != "/tasks/ws":
        await send({"type": "websocket.close", "code": 4404, "reason": "no such endpoint"})
        return
    try:
        interval = max(parse_duration(query.get("interval", "1s")), 0.1)
        task_query = TaskQuery.from_params(query)
    except ValueError as exc:
        await send({"type": "websocket.close", "code": 4400, "reason": str(exc)[:120]})
        return
    async with trio.open_nursery() as nursery:

        async def until_disconnect() -> None:
            while (await receive())["type"] != "websocket.disconnect":
                pass
            nursery.cancel_scope.cancel()

        nursery.start_soon(until_disconnect, name="admin websocket reader")
        while True:
            await send({"type": "websocket.send", "text": await tree_message(task_query)})
            await trio.sleep(interval)
