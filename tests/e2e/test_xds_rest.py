"""A real control plane, sovereign, drives two gateway instances over REST-JSON xDS.

sovereign renders the jinja templates in tests/sovereign/ from a data file it re-reads
every second; the test changes that file (a cluster added, a route changed, an endpoint
removed, an unsupported field) and watches both instances follow, under load.

sovereign does not install next to the gateway's own dependencies, so it lives in a venv:
    python -m venv /opt/sovereign && /opt/sovereign/bin/pip install sovereign
and `SOVEREIGN=/opt/sovereign/bin/sovereign` (that path is also looked at by default).
"""

import os
import shutil
import signal
import subprocess
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio
import yaml

from gateway import open_gateway
from gateway.config import loads_config
from tests.config_builder import ConfigBuilder
from tests.helpers import SteadyLoad, admin_url, converged, free_port, start_upstream

TEMPLATES = Path(__file__).resolve().parents[1] / "sovereign"
SOVEREIGN = (
    os.environ.get("SOVEREIGN") or shutil.which("sovereign") or "/opt/sovereign/bin/sovereign"
)

pytestmark = pytest.mark.skipif(
    not Path(SOVEREIGN).exists(),
    reason="needs sovereign: python -m venv /opt/sovereign && /opt/sovereign/bin/pip install "
    "sovereign (or set SOVEREIGN=path)",
)


def gateway_config(node: str, control_plane: int) -> str:
    """Everything from the control plane at `control_plane` (REST), as node `node`."""
    config = ConfigBuilder()
    config.server(drain_timeout="3s", drain_grace="300ms")
    config.table("dynamic", "rest", cluster="xds", refresh_delay="200ms")
    config.table("dynamic", "node", id=node, cluster="edge-fleet")
    config.cluster("xds", control_plane)
    return config.toml()


async def start_sovereign(nursery: trio.Nursery, workdir: Path, data: dict) -> tuple[int, Path]:
    data_file = workdir / "data.yaml"
    data_file.write_text(yaml.safe_dump(data))
    templates = {
        kind: {
            "protocol": "file",
            "serialization": "jinja",
            "path": str(TEMPLATES / f"{kind}.yaml"),
        }
        for kind in ("clusters", "endpoints", "listeners", "routes")
    }
    config = {
        "templates": {"default": [{"type": k, "spec": v} for k, v in templates.items()]},
        "template_context": {
            "context": {
                "data": {"protocol": "file", "serialization": "yaml", "path": str(data_file)}
            },
            "refresh": True,
            "refresh_rate": 1,
        },
    }
    (workdir / "sovereign.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    env = dict(
        os.environ,
        SOVEREIGN_CONFIG=f"file://{workdir / 'sovereign.yaml'}",
        SOVEREIGN_HOST="127.0.0.1",
        SOVEREIGN_PORT=str(port),
        # One process: several would each re-read the data on their own clock and answer
        # old and new versions in turn while they differ.
        SOVEREIGN_WORKERS="1",
    )
    # Its own session: sovereign runs gunicorn workers, which must go with it.
    process = await trio.lowlevel.open_process(
        [SOVEREIGN],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    async def stop() -> None:
        try:
            await trio.sleep_forever()
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await process.wait()

    nursery.start_soon(stop)
    with trio.fail_after(30):
        async with httpx.AsyncClient() as client:
            while True:
                try:
                    await client.get(f"http://127.0.0.1:{port}/healthcheck")
                    break
                except httpx.HTTPError:
                    await trio.sleep(0.2)
    return port, data_file


async def test_sovereign_drives_two_instances_under_load(nursery, tmp_path):
    a1 = await start_upstream(nursery, "a1")
    a2 = await start_upstream(nursery, "a2")
    b = await start_upstream(nursery, "b")
    ports = {"gw1": free_port(), "gw2": free_port()}
    data = {
        "ports": ports,
        "clusters": [{"name": "app", "endpoints": [a1.port, a2.port]}],
        "routes": [{"prefix": "/", "cluster": "app"}],
    }
    cp_port, data_file = await start_sovereign(nursery, tmp_path, data)

    def change(**update: object) -> None:
        data.update(update)
        data_file.write_text(yaml.safe_dump(data))

    load = SteadyLoad()
    async with (
        open_gateway(loads_config(gateway_config("gw1", cp_port))) as gw1,
        open_gateway(loads_config(gateway_config("gw2", cp_port))) as gw2,
        httpx.AsyncClient(timeout=5) as client,
    ):
        edges = [f"http://127.0.0.1:{ports[n]}" for n in ("gw1", "gw2")]

        def at(path: str) -> list[str]:
            return [edge + path for edge in edges]

        # Both instances warm up from sovereign.
        await converged(client, at("/"), {"a1", "a2"}, timeout=15)

        async with trio.open_nursery() as loaders:
            for edge in edges:
                loaders.start_soon(partial(load.client, edge + "/load", timeout=5))
            # A cluster added and a route changed: /b goes to the new cluster.
            change(
                clusters=[*data["clusters"], {"name": "extra", "endpoints": [b.port]}],  # type: ignore[misc]
                routes=[{"prefix": "/b", "cluster": "extra"}, {"prefix": "/", "cluster": "app"}],
            )
            await converged(client, at("/b"), {"b"}, timeout=3)
            # An endpoint removed (EDS): a2 leaves app.
            change(
                clusters=[
                    {"name": "app", "endpoints": [a1.port]},
                    {"name": "extra", "endpoints": [b.port]},
                ]
            )
            await converged(client, at("/"), {"a1"}, timeout=3)
            await trio.sleep(0.5)
            loaders.cancel_scope.cancel()
        assert load.failures == []
        assert load.served > 50

        # NACK: a field the gateway cannot honour; both refuse it, naming the field, and
        # keep serving the last good config.
        change(unsupported=True)

        async def refused(gw: object) -> bool:
            dump = (await client.get(admin_url(gw, "/config_dump"))).json()  # type: ignore[arg-type]
            return bool(dump["dynamic_resources"]["last_update_rejected"])

        with trio.fail_after(5):
            while not (await refused(gw1) and await refused(gw2)):
                await trio.sleep(0.1)
        reason = (await client.get(admin_url(gw1, "/config_dump"))).json()["dynamic_resources"]
        assert "transport_socket: not supported" in reason["last_update_rejected"]
        await converged(client, at("/"), {"a1"}, timeout=1)
        await converged(client, at("/b"), {"b"}, timeout=1)
        kinds = {(r["type"], r["name"]) for r in reason["resources"]}
        assert {("Listener", "edge"), ("Cluster", "extra"), ("RouteConfiguration", "main")} <= kinds
        assert reason["source"] == "rest:xds"
