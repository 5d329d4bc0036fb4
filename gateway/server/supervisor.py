"""Supervising worker processes: `[server] workers = N` runs N gateways, one Trio loop
each, under one supervising process, as Envoy runs worker threads (the GIL rules threads
out).

Each worker is `python -m gateway _worker CONFIG --index I --ports JSON`: a whole gateway
with its own listeners, bound with SO_REUSEPORT so the kernel spreads new connections over
the workers, its own pools, health checkers and stats, and a private admin endpoint on a
loopback port. Its first line on stdout tells the supervisor that port; everything after
(an access log on "-") is copied to the supervisor's stdout.

The supervisor binds nothing but the admin address operators use (gateway/admin/
supervisor.py adds up the workers' stats and trees). It restarts a worker that dies, with
a back-off (one that dies while the gateway is starting fails the start, as a single
gateway's failed bind does), and forwards a shutdown (SIGTERM/SIGINT, /quitquitquit) and a
reload (SIGHUP, POST /reload, `watch`) to every worker. Listeners configured with port 0
get a port chosen here, so that all workers share it. The two processes' entry points,
`serve_supervised` and `run_worker`, are in workers.py.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from functools import partial
from typing import Any, Protocol

import attrs
import trio

from gateway.clusters.http_client import exchange
from gateway.clusters.upstream_h1 import UpstreamConnection
from gateway.config.load import load_config
from gateway.config.model import Admin, GatewayConfig
from gateway.config.watch import file_signature, watch
from gateway.errors import ConfigError, GatewayError, StartupError
from gateway.io.byte_stream import TcpStream
from gateway.io.trio_util import leaves
from gateway.observability.stats import Counter, Gauge, StatsStore, describe
from gateway.observability.stats_flush import StatsFlusher
from gateway.observability.stats_sink import UdpSink
from gateway.observability.tasktree import annotate
from gateway.protocol.headers import HeaderMap, RequestHead

log = logging.getLogger("gateway.workers")

#: A worker that dies is restarted after this long, doubled for each death in a row
#: (capped), so a worker that cannot start does not spin.
_RESTART_BACKOFF = 0.5
_RESTART_BACKOFF_MAX = 30.0
#: A worker that ran this long before dying starts the back-off from the beginning again.
_STABLE_AFTER = 10.0
#: Every worker must have started within this long.
_STARTUP_TIMEOUT = 60.0
#: A worker's admin answer must come within this long, and be no larger than this.
_WORKER_TIMEOUT = 10.0
_MAX_ANSWER = 64 << 20


async def worker_request(port: int, method: str, target: str) -> tuple[int, str, bytes]:
    """One request to a worker's private admin endpoint: status, content type, body.
    StartupError if the worker does not answer whole."""
    with trio.fail_after(_WORKER_TIMEOUT):
        stream = TcpStream(await trio.open_tcp_stream("127.0.0.1", port))
        conn = UpstreamConnection(stream, f"worker admin :{port}", max_header_bytes=65536)
        try:
            head = RequestHead(method, target, f"127.0.0.1:{port}", "http", HeaderMap())
            answer = await exchange(conn, head, max_body=_MAX_ANSWER)
        except GatewayError as exc:
            raise StartupError(f"worker admin :{port}: {exc}") from exc
        finally:
            conn.close()
    content_type = answer.headers.get("content-type") or "text/plain"
    return answer.status, content_type, answer.body


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, which a container's cpuset or
    `taskset` narrows, rather than every CPU of the machine (Python 3.13's
    os.process_cpu_count). Systems without affinity (macOS) give the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_count(config: GatewayConfig) -> int:
    """`[server] workers` as a number of processes: "auto" is one per available CPU."""
    workers = config.server.workers
    return available_cpus() if workers == "auto" else workers


def choose_ports(config: GatewayConfig) -> dict[str, int]:
    """A free port for each listener configured with port 0 (workers must agree)."""
    ports = {}
    for name, listener in config.listeners.items():
        if listener.address.port == 0:
            family = socket.AF_INET6 if ":" in listener.address.host else socket.AF_INET
            kind = socket.SOCK_DGRAM if listener.protocol == "quic" else socket.SOCK_STREAM
            with socket.socket(family, kind) as probe:
                probe.bind((listener.address.host, 0))
                ports[name] = probe.getsockname()[1]
    return ports


@attrs.define(eq=False)
class Worker:
    index: int
    pid: int | None = None
    admin_port: int | None = None
    started_at: float = 0.0
    restarts: int = 0
    #: Between its hello (admin port known) and its exit.
    up: bool = False
    process: trio.Process | None = None

    def describe(self) -> dict[str, object]:
        return {
            "index": self.index,
            "pid": self.pid,
            "admin_port": self.admin_port,
            "uptime": f"{int(time.time() - self.started_at)}s" if self.pid else None,
            "restarts": self.restarts,
        }


@attrs.define
class SupervisorStats:
    workers_active: Gauge
    worker_restarts: Counter


describe(
    "server",
    {
        "workers_active": "Worker processes running and ready.",
        "worker_restarts": "Workers started again after exiting unexpectedly.",
    },
)


async def _stats_of(worker: Worker) -> list[dict[str, Any]]:
    assert worker.admin_port is not None
    _, _, body = await worker_request(worker.admin_port, "GET", "/stats?format=raw")
    rows: list[dict[str, Any]] = json.loads(body)
    return rows


def _source(worker: Worker) -> str:
    """A worker process as a source of stats: a restarted worker is a new one."""
    return f"worker {worker.index} pid {worker.pid}"


class ServeAdmin(Protocol):
    """Serves a supervisor's admin endpoint (gateway/admin/supervisor.py, which reads and
    drives the supervisor from above); started with `nursery.start`, it reports its port."""

    async def __call__(
        self,
        supervisor: "Supervisor",
        admin: Admin,
        *,
        task_status: trio.TaskStatus[int] = ...,
    ) -> None: ...


class Supervisor:
    def __init__(self, config: GatewayConfig, config_path: str, serve_admin: ServeAdmin) -> None:
        self.config = config
        self.config_path = config_path
        self._serve_admin = serve_admin
        self.started_at = time.time()
        self.ports = choose_ports(config)
        self.workers = [Worker(i) for i in range(worker_count(config))]
        self.store = StatsStore()
        scope = self.store.scope("server", "server")
        self.stats = SupervisorStats(
            scope.gauge("workers_active"), scope.counter("worker_restarts")
        )
        self.stopping = False
        #: Set once every worker has reported in and the admin endpoint is open; before
        #: that, a worker that exits stops the start-up rather than being restarted.
        self.started = False
        #: Why the start-up failed: `run` raises it once the workers have stopped.
        self.startup_failure: StartupError | None = None
        self.shutdown_requested = trio.Event()
        self.admin_port: int | None = None
        #: Set (and replaced) whenever a worker reports ready.
        self._worker_ready = trio.Event()

    @property
    def listener_ports(self) -> dict[str, int]:
        return {
            name: self.ports.get(name, lst.address.port)
            for name, lst in self.config.listeners.items()
        }

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        """Until a shutdown: keeps the workers running; then drains them and returns.
        Raises StartupError if the workers did not all start (as a single gateway that
        cannot bind fails), once the others have stopped."""
        annotate("supervisor", workers=len(self.workers))
        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(self._keep_running, worker, name=f"worker {worker.index}")
            nursery.start_soon(self._open_when_ready, nursery, name="supervisor start-up")
            if self.config.stats_sinks:
                nursery.start_soon(self._flush_stats, name="stats flush")
            await self.shutdown_requested.wait()
            await self._stop_workers()
            nursery.cancel_scope.cancel()
        if self.startup_failure is not None:
            raise self.startup_failure

    def _fail_startup(self, reason: str) -> None:
        if self.startup_failure is None:
            self.startup_failure = StartupError(reason)
        self.shutdown_requested.set()

    async def _open_when_ready(self, nursery: trio.Nursery) -> None:
        """Once every worker is up (restarted ones included), opens the admin endpoint
        and announces the start; a start-up that takes too long is a shutdown."""
        with trio.move_on_after(_STARTUP_TIMEOUT) as waiting:
            while any(w.admin_port is None for w in self.workers):
                await self._worker_ready.wait()
                self._worker_ready = trio.Event()
        if waiting.cancelled_caught:
            self._fail_startup(f"workers did not start within {_STARTUP_TIMEOUT}s")
            return
        if self.config.admin is not None:
            try:
                self.admin_port = await nursery.start(
                    self._serve_admin, self, self.config.admin, name="admin"
                )
            except* StartupError as refused:  # the address is taken: the workers drain
                self._fail_startup(str(leaves(refused)[0]))
            if self.startup_failure is not None:
                return
        if self.config.server.watch:
            nursery.start_soon(self._watch, name="config watcher")
        self.started = True
        log.info(
            "gateway started: listeners %s, admin %s, workers %s",
            self.listener_ports,
            self.admin_port,
            [w.pid for w in self.workers],
        )

    async def _keep_running(self, worker: Worker) -> None:
        backoff = _RESTART_BACKOFF
        while not self.stopping:
            started = time.monotonic()
            code = await self._run_once(worker)
            if self.stopping:
                return
            if not self.started:
                # Its reason (a port taken, a file missing) is on stderr; restarting would
                # hide it behind back-offs until the start-up timeout.
                self._fail_startup(f"worker {worker.index} exited with {code} while starting")
                return
            self.stats.worker_restarts.inc()
            worker.restarts += 1
            if time.monotonic() - started > _STABLE_AFTER:
                backoff = _RESTART_BACKOFF
            log.error(
                "worker %d (pid %s) exited with %s; restarting in %.1fs",
                worker.index,
                worker.pid,
                code,
                backoff,
            )
            await trio.sleep(backoff)
            backoff = min(backoff * 2, _RESTART_BACKOFF_MAX)

    async def _run_once(self, worker: Worker) -> int:
        command = [
            sys.executable,
            "-m",
            "gateway",
            "_worker",
            self.config_path,
            "--index",
            str(worker.index),
            "--ports",
            json.dumps(self.ports),
            "--log-level",
            logging.getLevelName(logging.getLogger("gateway").getEffectiveLevel()).lower(),
        ]
        # A session of its own: a terminal's Ctrl-C reaches the supervisor, which stops
        # the workers in order, rather than every worker at once.
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, start_new_session=True
        )
        worker.process, worker.pid, worker.started_at = process, process.pid, time.time()
        assert process.stdout is not None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._relay_output, worker, process.stdout)
                code = await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.kill()
            worker.admin_port = None
            if worker.up:
                worker.up = False
                self.stats.workers_active.dec()
        return code

    async def _relay_output(self, worker: Worker, stdout: trio.abc.ReceiveStream) -> None:
        """Reads the worker's hello (its admin port), then passes its output through."""
        buffer = b""
        while b"\n" not in buffer:
            data = await stdout.receive_some(65536)
            if not data:
                return
            buffer += data
        rest: bytes | bytearray
        line, _, rest = buffer.partition(b"\n")
        hello = json.loads(line)
        worker.admin_port = hello["admin_port"]
        worker.up = True
        self._worker_ready.set()
        self.stats.workers_active.inc()
        out = sys.stdout.buffer
        while True:
            if rest:
                out.write(rest)
                out.flush()
            rest = await stdout.receive_some(65536)
            if not rest:
                return

    async def _stop_workers(self) -> None:
        """SIGTERM to every worker (each drains), then wait for them to exit."""
        self.stopping = True
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        with trio.move_on_after(self.config.server.drain_timeout + 5):
            for worker in self.workers:
                if worker.process is not None:
                    await worker.process.wait()

    # -- stats ---------------------------------------------------------------------------

    async def worker_stats(self) -> list[tuple[Worker, list[dict[str, Any]]]]:
        """Every running worker's stats, as export rows (`/stats?format=raw`)."""
        return [(w, await _stats_of(w)) for w in self.workers if w.admin_port is not None]

    async def _flush_stats(self) -> None:
        """The `[[stats_sinks]]` get the counters and gauges of all workers added up, as
        /stats shows them (each worker sends its own histograms' samples): a gauge sent
        by every worker under one name would be each receiver's last one, not the sum.
        Counters go as increases per worker process, so a restart costs no count."""
        interval = self.config.server.stats_flush_interval
        flusher = StatsFlusher(
            [UdpSink(sink, i, self.store) for i, sink in enumerate(self.config.stats_sinks)]
        )
        annotate(
            "stats flush",
            live=flusher.task_fields,
            sinks=", ".join(str(s) for s in flusher.sinks),
            interval_s=interval,
        )
        try:
            while True:
                await flusher.connect()
                await trio.sleep(interval)
                sources = [("supervisor", self.store.export())]
                for worker in self.workers:
                    if worker.admin_port is None:
                        continue
                    try:
                        sources.append((_source(worker), await _stats_of(worker)))
                    except (OSError, GatewayError, StartupError, trio.TooSlowError) as exc:
                        # Its increase goes with the next flush it answers.
                        log.warning("stats flush: worker %d did not answer: %s", worker.index, exc)
                keep = {"supervisor", *(_source(w) for w in self.workers)}
                flusher.flush(sources, keep=keep)
        finally:
            flusher.close()

    # -- reload --------------------------------------------------------------------------

    async def reload(self) -> list[str]:
        """Validates the config file, then has every worker reload it. Raises ConfigError
        (the workers are not asked) or StartupError (a worker refused it)."""
        # Off the event loop: the supervisor's admin and the workers' health go on.
        config = await trio.to_thread.run_sync(load_config, self.config_path)
        if (worker_count(config), config.listeners.keys()) != (
            len(self.workers),
            self.config.listeners.keys(),
        ):
            log.warning("worker count and new port-0 listeners take effect on restart")
        changes: list[str] = []
        for worker in self.workers:
            if worker.admin_port is None:
                continue
            status, _, body = await worker_request(worker.admin_port, "POST", "/reload")
            answer = json.loads(body)
            if status != 200:
                raise StartupError(f"worker {worker.index}: {'; '.join(answer['errors'])}")
            changes = answer["changes"]
        self.config = config
        return changes

    async def _watch(self) -> None:
        annotate("config watcher", path=self.config_path)

        async def reload() -> None:
            try:
                await self.reload()
            except (ConfigError, StartupError) as exc:
                log.error("reload rejected: %s", exc)

        path = self.config_path
        await watch(partial(file_signature, path), file_signature(path), reload)
