"""A reload's parsing and validation never stall traffic: a heavy config is checked in a
worker thread, and a config that would once hang the checks (a huge Maglev table, a FIFO
for a certificate) is refused at once. The gateway runs as its own process, so a stalled
event loop shows as a slow canary here instead of stalling the test."""

import os
from functools import partial
from pathlib import Path

import httpx
import trio

from tests.helpers import SteadyLoad, free_port, serving
from tests.tls_helpers import Pki

#: What a canary may feel during a reload: the heavy config's parse and check take 1-2 s
#: on a busy 2-core machine, all of it on the event loop before the fix; in a worker
#: thread the canary still shares the GIL and sits out a full garbage collection of the
#: grown heap (~100 ms): 0.15-0.3 s.
CANARY_BOUND = 0.6


def config_text(admin_port: int, *, routes: int = 0, cluster: str = "", extra: str = "") -> str:
    # Regex and header-regex routes: what costs the most to parse and check.
    many = "".join(
        f"[[virtual_hosts.main.routes]]\n"
        f"match = {{ regex = '/r{i}/[0-9]+/x', headers = [{{ name = 'x-a', regex = 'v{i}.*' }}] }}"
        f"\ndirect_response = {{ status = 200, body = 'r{i}' }}\n"
        for i in range(routes)
    )
    return f"""
[admin]
address = "127.0.0.1:{admin_port}"

[listeners.edge]
address = "127.0.0.1:0"
virtual_hosts = ["main"]

[virtual_hosts.main]
domains = ["*"]

[[virtual_hosts.main.routes]]
match = {{ path = "/canary" }}
direct_response = {{ status = 200, body = "alive" }}
{many}
[clusters.backend]
endpoints = ["127.0.0.1:1"]
{cluster}
{extra}
"""


async def test_reloads_heavy_and_hanging_configs_while_a_canary_is_served(tmp_path: Path):
    admin_port = free_port()
    path = tmp_path / "gateway.toml"
    path.write_text(config_text(admin_port))
    fifo = tmp_path / "cert.pem"
    os.mkfifo(fifo)
    key = Pki(tmp_path).issue("a.example.com").private_key
    tls_listener = (
        "[listeners.tls]\naddress = '127.0.0.1:0'\n[[listeners.tls.filter_chains]]\n"
        f'tls = {{ certificates = [{{ certificate_chain = "{fifo}", private_key = "{key}" }}] }}'
        "\nfilters = [{ type = 'tcp_proxy', cluster = 'backend' }]\n"
    )
    maglev = f"lb_policy = 'maglev'\nmaglev.table_size = {2**61 - 1}"
    refused = {
        "clusters.backend.maglev.table_size: must be from 7 to 65537, got 2305843009213693951": (
            config_text(admin_port, cluster=maglev)
        ),
        f"listeners.tls.filter_chains[0].tls.certificates[0].certificate_chain: cannot read "
        f"{fifo}: not a regular file (a directory, FIFO, socket or device)": (
            config_text(admin_port, extra=tls_listener)
        ),
        # A FIFO nobody reads, as an access log: open() would wait for a reader.
        f"listeners.edge.access_log.path: cannot open {fifo}: No such device or address": (
            config_text(admin_port).replace(
                "[virtual_hosts.main]", f'access_log = {{ path = "{fifo}" }}\n[virtual_hosts.main]'
            )
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
            for error, text in refused.items():
                path.write_text(text)
                with trio.fail_after(5):
                    response = await admin.post(reload_url)
                assert response.status_code == 400
                assert response.json()["errors"] == [error]
            path.write_text(config_text(admin_port, routes=6000))
            response = await admin.post(reload_url)
            assert response.status_code == 200, response.text
            edge = f"http://127.0.0.1:{served.port}"
            routed = await admin.get(f"{edge}/r5999/7/x", headers={"x-a": "v5999"})
            assert routed.text == "r5999"
            await canary.until_served(20)
            clients.cancel_scope.cancel()
    assert canary.failures == []
    assert canary.slowest < CANARY_BOUND, canary.slowest
