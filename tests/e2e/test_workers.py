"""`[server] workers = 2`: a supervisor and two worker processes on one port; and the
default, `"auto"`: one worker per CPU this process may run on."""

import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from gateway.server.supervisor import available_cpus
from tests.config_builder import local, proxy_config
from tests.helpers import admin_url, run_gateway, serving, start_upstream, url


@asynccontextmanager
async def supervised(config: Path) -> AsyncIterator[tuple[trio.Process, int, int]]:
    """Runs `gateway serve` with workers; yields (process, listener port, admin port)."""
    async with serving(config, "gateway.workers: gateway started") as served:
        admin = int(served.line.split("admin ")[1].split(",")[0])
        yield served.process, served.port, admin


def two_workers(port: int, **proxy: Any) -> str:
    """The TOML of a two-worker gateway; `proxy` goes to proxy_config."""
    config = proxy_config(port, **proxy)
    config.server(workers=2, drain_timeout="3s")
    return config.toml()


async def test_two_workers_share_the_port_and_the_admin_adds_them_up(nursery, tmp_path):
    up = await start_upstream(nursery)
    config = tmp_path / "g.toml"
    config.write_text(two_workers(up.port))
    async with supervised(config) as (_, port, admin), httpx.AsyncClient() as client:
        for _ in range(60):  # a new connection each: the kernel spreads them over workers
            async with httpx.AsyncClient() as one_shot:
                assert (await one_shot.get(f"http://127.0.0.1:{port}/x")).status_code == 200
        base = f"http://127.0.0.1:{admin}"
        stats = (await client.get(f"{base}/stats?format=json")).json()["stats"]
        totals = {s["name"]: s.get("value") for s in stats}
        assert totals["http.edge.downstream_rq_total"] == 60
        assert totals["server.workers_active"] == 2
        info = (await client.get(f"{base}/server_info")).json()
        assert info["command_line_options"]["concurrency"] == 2
        served = []
        for worker in info["workers"]:
            own = await client.get(
                f"http://127.0.0.1:{worker['admin_port']}/stats?filter=downstream_rq_total$"
            )
            served.append(int(own.text.split(": ")[1]))
        assert sum(served) == 60 and min(served) > 0, served
        tree = (await client.get(f"{base}/tasks")).json()
        assert [c["name"] for c in tree["children"]] == ["worker 0", "worker 1"]
        async with open_websocket_url(f"ws://127.0.0.1:{admin}/tasks/ws?listener=edge") as ws:
            live = json.loads(await ws.get_message())["tree"]
        assert [c["name"] for c in live["children"]] == ["worker 0", "worker 1"]
        prom = (await client.get(f"{base}/stats/prometheus")).text
        assert "envoy_http_downstream_rq_total" in prom
        # The supervisor's admin endpoint refuses other sites' pages as a worker's does.
        foreign = {"origin": "http://evil.example"}
        refused = await client.post(f"{base}/quitquitquit", headers=foreign)
        assert refused.status_code == 403
        assert (await client.get(f"{base}/ready")).status_code == 200
        refused_stat = await client.get(f"{base}/stats?filter=^admin\\.rq_refused$")
        assert refused_stat.text == "admin.rq_refused: 1\n"


async def test_a_worker_that_dies_is_restarted(nursery, tmp_path):
    up = await start_upstream(nursery)
    config = tmp_path / "g.toml"
    config.write_text(two_workers(up.port))
    async with supervised(config) as (_, port, admin), httpx.AsyncClient() as client:
        base = f"http://127.0.0.1:{admin}"
        victim = (await client.get(f"{base}/server_info")).json()["workers"][0]
        os.kill(victim["pid"], signal.SIGKILL)
        with trio.fail_after(10):
            while True:
                worker = (await client.get(f"{base}/server_info")).json()["workers"][0]
                if worker["restarts"] == 1 and worker["admin_port"]:
                    break
                await trio.sleep(0.1)
        assert worker["pid"] != victim["pid"]
        stats = (await client.get(f"{base}/stats?filter=worker_restarts")).text
        assert "server.worker_restarts: 1" in stats
        for _ in range(10):
            async with httpx.AsyncClient() as one_shot:
                assert (await one_shot.get(f"http://127.0.0.1:{port}/")).status_code == 200


async def test_sigterm_drains_every_worker(nursery, tmp_path):
    up = await start_upstream(nursery)
    config = tmp_path / "g.toml"
    config.write_text(two_workers(up.port))
    async with supervised(config) as (proc, port, admin), httpx.AsyncClient() as client:
        pids = [
            w["pid"]
            for w in (await client.get(f"http://127.0.0.1:{admin}/server_info")).json()["workers"]
        ]
        results = []

        async def slow() -> None:
            results.append(
                (await client.get(f"http://127.0.0.1:{port}/slow?delay=0.5")).status_code
            )

        async with trio.open_nursery() as n:
            n.start_soon(slow)
            while not up.requests:
                await trio.sleep(0.01)
            proc.send_signal(signal.SIGTERM)
        assert results == [200]
        with trio.fail_after(10):
            assert await proc.wait() == 0
    for pid in pids:  # the workers exited too
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_reload_goes_to_every_worker_after_validation(nursery, tmp_path):
    up = await start_upstream(nursery)
    config = tmp_path / "g.toml"
    config.write_text(two_workers(up.port))
    async with supervised(config) as (_, port, admin), httpx.AsyncClient() as client:
        base = f"http://127.0.0.1:{admin}"
        config.write_text(two_workers(up.port, catch_all={"cluster": "gone"}))
        answer = await client.post(f"{base}/reload")
        assert answer.status_code == 400
        assert "no cluster named 'gone'" in answer.json()["errors"][0]
        routed = {"response_headers_to_add": {"x-v": "2"}}
        config.write_text(two_workers(up.port, catch_all=routed))
        assert (await client.post(f"{base}/reload")).status_code == 200
        for _ in range(20):
            async with httpx.AsyncClient() as one_shot:
                assert (await one_shot.get(f"http://127.0.0.1:{port}/")).headers["x-v"] == "2"


async def test_workers_do_not_outlive_a_killed_supervisor(nursery, tmp_path):
    up = await start_upstream(nursery)
    config = tmp_path / "g.toml"
    config.write_text(two_workers(up.port))
    async with supervised(config) as (proc, _, admin), httpx.AsyncClient() as client:
        info = (await client.get(f"http://127.0.0.1:{admin}/server_info")).json()
        pids = [w["pid"] for w in info["workers"]]
        proc.kill()
        await proc.wait()
        with trio.fail_after(10):
            for pid in pids:
                while True:
                    try:
                        os.kill(pid, 0)
                    except ProcessLookupError:
                        break
                    await trio.sleep(0.1)


async def test_workers_stay_up(nursery, tmp_path):
    """Workers live as long as the supervisor: nothing tied to a passing thread (Trio's
    thread cache retires idle threads after 10 s) may stop them."""
    up = await start_upstream(nursery)
    config = tmp_path / "g.toml"
    config.write_text(two_workers(up.port))
    async with supervised(config) as (_, port, admin), httpx.AsyncClient() as client:
        await trio.sleep(12)
        info = (await client.get(f"http://127.0.0.1:{admin}/server_info")).json()
        assert [w["restarts"] for w in info["workers"]] == [0, 0]
        assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200


@pytest.mark.skipif(available_cpus() < 2, reason="one CPU: the default is one process")
async def test_the_default_is_a_worker_per_cpu_behind_one_admin(nursery, tmp_path):
    """No `workers` key: `gateway serve` supervises one worker per CPU (2 on the 2-core
    test machine), and the admin answers for all of them until /quitquitquit stops all."""
    cpus = available_cpus()
    names = [f"worker {i}" for i in range(cpus)]
    up = await start_upstream(nursery)
    config = tmp_path / "g.toml"
    config.write_text(proxy_config(up.port).toml())
    assert "workers" not in config.read_text()
    async with supervised(config) as (proc, port, admin), httpx.AsyncClient() as client:
        base = f"http://127.0.0.1:{admin}"
        info = (await client.get(f"{base}/server_info")).json()
        assert info["command_line_options"]["concurrency"] == cpus
        pids = [w["pid"] for w in info["workers"]]
        assert len(set(pids)) == cpus and proc.pid not in pids
        for _ in range(20 * cpus):  # a connection each: the kernel spreads them
            async with httpx.AsyncClient() as one_shot:
                assert (await one_shot.get(f"http://127.0.0.1:{port}/x")).status_code == 200
        stats = await client.get(
            f"{base}/stats?filter=^(http.edge.downstream_rq_total|server.worker)"
        )
        assert stats.text.splitlines() == [
            f"http.edge.downstream_rq_total: {20 * cpus}",
            "server.worker_restarts: 0",
            f"server.workers_active: {cpus}",
        ]
        prom = (await client.get(f"{base}/stats/prometheus")).text
        assert (
            f'envoy_http_downstream_rq_total{{envoy_http_conn_manager_prefix="edge"}} {20 * cpus}'
            in prom
        )
        tree = (await client.get(f"{base}/tasks")).json()
        assert [c["name"] for c in tree["children"]] == names

        async def plotted() -> float:  # the dashboard's rate plot: all workers' requests
            history = (await client.get(f"{base}/stats/history")).json()
            return sum(p["rq_per_s"] for p in history["clusters"]["backend"])

        # Until the last second's sample is in: a second lasts a little more than 1 s,
        # the more so on a busy machine (worker 0 alone would have about 1/cpus).
        with trio.fail_after(5):
            while not 0.85 * 20 * cpus <= await plotted() <= 20 * cpus:
                await trio.sleep(0.2)
        assert "backend::127.0.0.1" in (await client.get(f"{base}/clusters")).text
        assert (await client.post(f"{base}/reload")).json()["reloaded"] is True
        tasks = await trio.run_process(
            [sys.executable, "-m", "gateway", "tasks", "--admin", local(admin)],
            capture_stdout=True,
        )
        assert all(f"[worker] {name}" in tasks.stdout.decode() for name in names)
        assert (await client.post(f"{base}/quitquitquit")).text == "OK\n"
        with trio.fail_after(10):
            assert await proc.wait() == 0
    for pid in pids:  # the workers exited too
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.skipif(available_cpus() < 2, reason="one CPU: the default is one process")
@pytest.mark.parametrize("taken", ["listener", "admin"])
async def test_a_port_taken_fails_the_start_of_every_worker(tmp_path, taken):
    """As a single gateway's failed bind does: exit 1 at once, the reason on stderr, no
    worker left (not restarts with back-offs until the start-up timeout)."""
    holder = trio.socket.socket()
    await holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    config = proxy_config(1)
    if taken == "listener":
        config.listener(address=local(port))
        reason = f"listeners.edge: cannot bind 127.0.0.1:{port}: Address already in use"
    else:
        config.table("admin", address=local(port))
        reason = f"admin.address: cannot bind 127.0.0.1:{port}: Address already in use"
    (tmp_path / "g.toml").write_text(config.toml())
    with trio.fail_after(20):
        result = await trio.run_process(
            [sys.executable, "-m", "gateway", "serve", str(tmp_path / "g.toml")],
            capture_stderr=True,
            check=False,
        )
    holder.close()
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert reason in stderr
    assert "Traceback" not in stderr and "restarting" not in stderr


@pytest.mark.parametrize("workers", [4, "auto"])
async def test_embedding_runs_in_the_callers_process_whatever_workers_says(nursery, workers):
    """Workers are a feature of `gateway serve`: `open_gateway` starts no process."""
    up = await start_upstream(nursery)
    config = proxy_config(up.port)
    config.server(workers=workers)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        info = (await client.get(admin_url(gw, "/server_info"))).json()
        assert info["command_line_options"]["concurrency"] == 1 and "workers" not in info
        assert gw.worker is None
        assert (await client.get(url(gw, "/x"))).status_code == 200
