"""A reload's parsing and validation never stall traffic: a heavy config is checked in a
worker thread, and a config that would once hang the checks (a huge Maglev table, a FIFO
for a certificate) is refused at once. The gateway runs as its own process, so a stalled
event loop shows as a slow canary here instead of stalling the test."""

import os
from functools import partial
from pathlib import Path

import httpx
import trio

from tests.config_builder import ConfigBuilder, local, route
from tests.helpers import SteadyLoad, free_port, serving
from tests.tls_helpers import Pki

#: What a canary may feel during a reload: the heavy config's parse and check take 1-2 s
#: on a busy 2-core machine, all of it on the event loop before the fix; in a worker
#: thread the canary still shares the GIL and sits out a full garbage collection of the
#: grown heap (~100 ms): 0.15-0.3 s.
CANARY_BOUND = 0.6


def canary_config(admin_port: int, *, routes: int = 0) -> ConfigBuilder:
    """Admin on `admin_port`; listener `edge` answers /canary, and `routes` more routes.
    One process: the subject is a gateway's own event loop while it reloads (a supervisor
    would name the worker in a refusal, `worker 0: ...`, as test_workers.py checks)."""
    config = ConfigBuilder()
    config.table("admin", address=local(admin_port))
    config.server(workers=1)
    config.listener(virtual_hosts=["main"])
    canary = route(match={"path": "/canary"}, direct_response={"status": 200, "body": "alive"})
    # Regex and header-regex routes: what costs the most to parse and check.
    many = (
        route(
            match={"regex": f"/r{i}/[0-9]+/x", "headers": [{"name": "x-a", "regex": f"v{i}.*"}]},
            direct_response={"status": 200, "body": f"r{i}"},
        )
        for i in range(routes)
    )
    config.virtual_host("main", canary, *many)
    config.cluster("backend", 1)
    return config


async def test_reloads_heavy_and_hanging_configs_while_a_canary_is_served(tmp_path: Path):
    admin_port = free_port()
    path = tmp_path / "gateway.toml"
    path.write_text(canary_config(admin_port).toml())
    fifo = tmp_path / "cert.pem"
    os.mkfifo(fifo)
    key = Pki(tmp_path).issue("a.example.com").private_key
    huge_maglev = canary_config(admin_port)
    huge_maglev.cluster("backend", lb_policy="maglev", maglev={"table_size": 2**61 - 1})
    fifo_certificate = canary_config(admin_port)
    fifo_certificate.filter_chain(
        "tls",
        tls={"certificates": [{"certificate_chain": str(fifo), "private_key": key}]},
        filters=[{"type": "tcp_proxy", "cluster": "backend"}],
    )
    # A FIFO nobody reads, as an access log: open() would wait for a reader.
    fifo_log = canary_config(admin_port)
    fifo_log.listener(access_log={"path": str(fifo)})
    refused = {
        "clusters.backend.maglev.table_size: must be from 7 to 65537, got 2305843009213693951": (
            huge_maglev
        ),
        f"listeners.tls.filter_chains[0].tls.certificates[0].certificate_chain: cannot read "
        f"{fifo}: not a regular file (a directory, FIFO, socket or device)": fifo_certificate,
        f"listeners.edge.access_log.path: cannot open {fifo}: No such device or address": (
            fifo_log
        ),
    }
    async with serving(path) as served, httpx.AsyncClient(timeout=30) as admin:
        canary = SteadyLoad()
        reload_url = f"http://127.0.0.1:{admin_port}/reload"
        async with trio.open_nursery() as clients:
            clients.start_soon(
                partial(canary.client, f"http://127.0.0.1:{served.port}/canary", timeout=30)
            )
            await canary.until_served(20)
            for error, config in refused.items():
                path.write_text(config.toml())
                with trio.fail_after(5):
                    response = await admin.post(reload_url)
                assert response.status_code == 400
                assert response.json()["errors"] == [error]
            path.write_text(canary_config(admin_port, routes=6000).toml())
            response = await admin.post(reload_url)
            assert response.status_code == 200, response.text
            edge = f"http://127.0.0.1:{served.port}"
            routed = await admin.get(f"{edge}/r5999/7/x", headers={"x-a": "v5999"})
            assert routed.text == "r5999"
            await canary.until_served(20)
            clients.cancel_scope.cancel()
    assert canary.failures == []
    assert canary.slowest < CANARY_BOUND, canary.slowest
