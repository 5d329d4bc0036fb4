"""The admin endpoint of a supervisor of worker processes: one address for all workers.

Each worker has a private admin on a loopback port; this app asks them and answers as one:
- /stats and /stats/prometheus add the workers' stats up (counters and gauges summed,
  histograms bucket by bucket), plus the supervisor's own `server.*` stats; /stats/history
  adds up the workers' samples of each second;
- /tasks puts each worker's task tree under a `worker` node; task ids become
  `WORKER.ID`, and `POST /tasks/WORKER.ID/cancel` goes to that worker;
- /server_info lists the workers (pid, uptime, restarts); /ready is LIVE when all are;
- POST endpoints (/healthcheck/fail|ok, /drain_listeners, /reset_counters, /logging) go
  to every worker; /reload validates the file, then reloads every worker; /quitquitquit
  drains the workers and stops;
- any other GET (/clusters, /listeners, /config_dump, /logging, /explain, the dashboard)
  is worker 0's answer: every worker runs the same config (its pools and health are its
  own, and /explain says whose they are).
"""

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

import trio

from gateway.admin.app import serve_task_tree_websocket
from gateway.admin.asgi import Receive, Scope, Send, complete_lifespan
from gateway.admin.history import render_merged
from gateway.admin.serve import serve_admin_app
from gateway.admin.views import Reply, prometheus_of, stats_of
from gateway.config.model import Admin
from gateway.errors import ConfigError, GatewayError, StartupError
from gateway.observability import tasktree
from gateway.observability.stats import StatsStore
from gateway.observability.task_query import TaskQuery
from gateway.server.supervisor import Supervisor, worker_request
from gateway.version import gateway_version

log = logging.getLogger("gateway.admin")

_FAN_OUT = frozenset(
    ("/healthcheck/fail", "/healthcheck/ok", "/drain_listeners", "/reset_counters", "/logging")
)


class SupervisorAdminApp:
    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await serve_task_tree_websocket(scope, receive, send, self._tree_message)
            return
        if scope["type"] != "http":
            return
        try:
            reply = await self._dispatch(scope)
        except (OSError, GatewayError, StartupError, trio.TooSlowError) as exc:
            reply = Reply.text(f"a worker did not answer: {exc}\n", 503)
        await reply.send(send)

    def _ports(self) -> list[tuple[int, int]]:
        return [
            (w.index, w.admin_port) for w in self._supervisor.workers if w.admin_port is not None
        ]

    async def _dispatch(self, scope: Scope) -> Reply:
        path = scope["path"].rstrip("/") or "/"
        raw_query = scope["query_string"].decode("latin-1")
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        method = scope["method"]
        # As the client wrote it: a name given twice (/explain's header=) stays twice.
        target = path + (f"?{raw_query}" if raw_query else "")
        if path in ("/stats", "/stats/prometheus"):
            store = await self._merged_stats()
            if path == "/stats/prometheus":
                return prometheus_of(store, query)
            return stats_of(store, query)
        if path == "/tasks":
            return await self._tasks(query)
        if path == "/stats/history":
            return Reply.json(render_merged(await self._histories()))
        if path == "/server_info":
            return self._server_info()
        if path == "/ready":
            statuses = [(await worker_request(p, "GET", "/ready"))[0] for _, p in self._ports()]
            live = len(statuses) == len(self._supervisor.workers) and set(statuses) == {200}
            return Reply.text("LIVE\n" if live else "DRAINING\n", 200 if live else 503)
        if method == "POST":
            return await self._post(path, target)
        if path.startswith("/tasks/"):
            return Reply.text(f"{path} requires POST\n", 405)
        ports = self._ports()
        if not ports:
            return Reply.text("no worker is running\n", 503)
        return Reply(*await worker_request(ports[0][1], method, target))

    async def _post(self, path: str, target: str) -> Reply:
        supervisor = self._supervisor
        if path == "/quitquitquit":
            supervisor.shutdown_requested.set()
            return Reply.text("OK\n")
        if path == "/reload":
            try:
                changes = await supervisor.reload()
            except ConfigError as exc:
                return Reply.json({"reloaded": False, "errors": exc.errors}, 400)
            except StartupError as exc:
                return Reply.json({"reloaded": False, "errors": [str(exc)]}, 400)
            return Reply.json({"reloaded": True, "changes": changes})
        if path.startswith("/tasks/") and path.endswith("/cancel"):
            worker, _, task_id = path.split("/")[2].partition(".")
            port = dict(self._ports()).get(int(worker)) if worker.isdigit() else None
            if port is None:
                return Reply.text("task ids look like WORKER.ID; see /tasks\n", 404)
            return Reply(*await worker_request(port, "POST", f"/tasks/{task_id}/cancel"))
        if path not in _FAN_OUT:
            return Reply.text(f"no admin endpoint {path} takes POST; see /\n", 404)
        answers = [await worker_request(port, "POST", target) for _, port in self._ports()]
        if not answers:
            return Reply.text("no worker is running\n", 503)
        failed = [answer for answer in answers if answer[0] != 200]
        return Reply(*(failed or answers)[0])

    async def _merged_stats(self) -> StatsStore:
        store = StatsStore()
        store.merge(self._supervisor.store.export())
        for _, rows in await self._supervisor.worker_stats():
            store.merge(rows)
        return store

    async def _histories(self) -> list[dict[str, Any]]:
        histories = []
        for _, port in self._ports():
            _, _, body = await worker_request(port, "GET", "/stats/history?format=raw")
            histories.append(json.loads(body))
        return histories

    async def _tasks(self, query: dict[str, str]) -> Reply:
        try:
            tree = await self._merged_tree({k: v for k, v in query.items() if k != "format"})
        except WorkerAnswer as answer:
            return answer.reply
        if query.get("format") == "text":
            return Reply.text(tasktree.render_text(tree) + "\n")
        return Reply.json(tree)

    async def _tree_message(self, task_query: TaskQuery) -> str:
        """One /tasks/ws message: the workers' trees under the supervisor."""
        try:
            tree = await self._merged_tree(task_query.to_params())
        except (WorkerAnswer, OSError, GatewayError, StartupError, trio.TooSlowError):
            tree = {"name": "supervisor", "kind": "supervisor", "error": "a worker did not answer"}
        return json.dumps({"time": time.time(), "tree": tree})

    async def _merged_tree(self, params: dict[str, str]) -> dict[str, Any]:
        children = []
        for index, port in self._ports():
            target = "/tasks" + (f"?{urlencode(params)}" if params else "")
            status, content_type, body = await worker_request(port, "GET", target)
            if status != 200:
                raise WorkerAnswer(Reply(status, content_type, body))
            worker = self._supervisor.workers[index]
            children.append(
                {
                    "name": f"worker {index}",
                    "kind": "worker",
                    "pid": worker.pid,
                    "restarts": worker.restarts,
                    "children": [_prefix_ids(json.loads(body), index)],
                }
            )
        return {"name": "supervisor", "kind": "supervisor", "children": children}

    def _server_info(self) -> Reply:
        supervisor = self._supervisor
        uptime = f"{int(time.time() - supervisor.started_at)}s"
        return Reply.json(
            {
                "version": gateway_version(),
                "state": "DRAINING" if supervisor.stopping else "LIVE",
                "uptime_current_epoch": uptime,
                "uptime_all_epochs": uptime,
                "listeners": supervisor.listener_ports,
                "admin_port": supervisor.admin_port,
                "command_line_options": {
                    "config_path": supervisor.config_path,
                    "concurrency": len(supervisor.workers),
                },
                "workers": [w.describe() for w in supervisor.workers],
            }
        )


class WorkerAnswer(Exception):
    """A worker refused a request (e.g. a bad ?older_than=); its answer is the reply."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _prefix_ids(node: dict[str, Any], worker: int) -> dict[str, Any]:
    """Task ids are per worker; here they become `WORKER.ID`."""
    if "id" in node:
        node["id"] = f"{worker}.{node['id']}"
    for child in node.get("children", ()):
        _prefix_ids(child, worker)
    return node


async def serve_supervisor_admin(
    supervisor: Supervisor,
    admin: Admin,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    app = SupervisorAdminApp(supervisor)
    await serve_admin_app(app, admin, supervisor.store, task_status=task_status)
