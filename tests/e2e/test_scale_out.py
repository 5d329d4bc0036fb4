"""Scale-out: three gateway instances behind HAProxy (mode tcp, send-proxy-v2), one of them
taken out and put back the way Envoy fleets roll (docs/operations.md), under load."""

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import trio

from gateway import open_gateway
from gateway.config import loads_config
from tests.config_builder import ConfigBuilder, local, route
from tests.helpers import SteadyLoad, free_port, start_upstream

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="needs HAProxy: apt-get install haproxy"
)


def instance_config(port: int, admin: int, upstream: int, log: Path) -> ConfigBuilder:
    """One instance behind HAProxy: PROXY headers on `port`, /healthz answered locally,
    JSON access log to `log`, everything else to cluster `app`."""
    config = ConfigBuilder()
    config.table("admin", address=local(admin))
    config.server(drain_timeout="3s", drain_grace="300ms")
    config.listener(
        address=local(port),
        virtual_hosts=["main"],
        http_filters=["healthz"],
        proxy_protocol=True,
        access_log={"path": str(log), "format": "json", "flush_interval": "0s"},
    )
    config.http_filter("healthz", "health_check", path="/healthz")
    config.virtual_host("main", route(cluster="app"))
    config.cluster("app", upstream)
    return config


def haproxy_cfg(front: int, ports: list[int]) -> str:
    servers = "\n".join(
        f"  server gw{i} 127.0.0.1:{p} send-proxy-v2 check check-send-proxy inter 100 fall 2 rise 2"
        for i, p in enumerate(ports)
    )
    return f"""
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  # A check's own timeout is `inter` (100 ms) unless set: too short on a busy 2-core
  # machine, where a server would be marked down for a slow answer, not a failed one.
  timeout check 2s
frontend front
  bind 127.0.0.1:{front}
  default_backend gateways
backend gateways
  option httpchk GET /healthz
{servers}
"""


async def test_rolling_restart_behind_haproxy_loses_nothing(nursery, tmp_path):
    up = await start_upstream(nursery)
    ports = [free_port() for _ in range(3)]
    admins = [free_port() for _ in range(3)]
    logs = [tmp_path / f"access{i}.log" for i in range(3)]
    configs = [
        loads_config(instance_config(p, a, up.port, log).toml())
        for p, a, log in zip(ports, admins, logs, strict=True)
    ]
    running: dict[int, trio.Event] = {}

    async def instance(
        i: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with open_gateway(configs[i]) as gw:
            running[i] = trio.Event()
            task_status.started()
            await gw.shutdown_requested.wait()  # POST /quitquitquit; leaving drains
        running.pop(i).set()

    for i in range(3):
        await nursery.start(instance, i)
    front = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_cfg(front, ports))
    haproxy = await trio.lowlevel.open_process(
        ["haproxy", "-f", str(cfg), "-db"], stderr=subprocess.DEVNULL
    )
    load = SteadyLoad()
    try:
        async with httpx.AsyncClient() as probe:
            with trio.fail_after(10):
                while True:
                    try:
                        if (await probe.get(f"http://127.0.0.1:{front}/ready")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await trio.sleep(0.1)

        async with trio.open_nursery() as clients, httpx.AsyncClient() as admin:
            for _ in range(6):
                clients.start_soon(load.client, f"http://127.0.0.1:{front}/work")
            await trio.sleep(0.5)
            # The rolling restart of instance 1, step by step (docs/operations.md).
            base = f"http://127.0.0.1:{admins[1]}"
            assert (await admin.post(f"{base}/healthcheck/fail")).status_code == 200
            await trio.sleep(0.5)  # HAProxy: 2 failed checks, 100 ms apart -> out
            assert (await admin.post(f"{base}/drain_listeners")).status_code == 200
            await trio.sleep(0.5)
            stopped = running[1]
            assert (await admin.post(f"{base}/quitquitquit")).status_code == 200
            with trio.fail_after(5):
                await stopped.wait()
            await trio.sleep(0.3)
            await nursery.start(instance, 1)  # the new version, same port
            await trio.sleep(1.0)  # HAProxy: 2 good checks -> back in
            clients.cancel_scope.cancel()
    finally:
        haproxy.kill()
        await haproxy.wait()
    assert load.failures == []
    assert load.served > 100
    # Every instance saw the clients' own addresses (their ephemeral ports toward HAProxy),
    # never HAProxy's outgoing connections to the gateway alone.
    remotes = {
        json.loads(line)["downstream_remote_address"]
        for log in logs
        for line in log.read_text().splitlines()
    }
    assert all(r.startswith("127.0.0.1:") for r in remotes)
    after_restart = [json.loads(line) for line in logs[1].read_text().splitlines()]
    assert any(r["path"] == "/work" for r in after_restart)
