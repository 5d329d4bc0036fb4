"""The admin endpoint against web pages: cross-origin WebSocket handshakes and state
changes, DNS-rebound Host names, and request URLs with secrets in /tasks; real clients
(websockets, httpx, trio-websocket) while a canary keeps using the gateway."""

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
import websockets.sync.client
from trio_websocket import open_websocket_url
from websockets.exceptions import InvalidStatus

from tests.admin_helpers import wait_for_node
from tests.config_builder import proxy_config
from tests.helpers import (
    SteadyLoad,
    admin_url,
    eventually,
    run_gateway,
    start_upstream,
    url,
)

EVIL = "http://evil.example"


@pytest.fixture
async def gateway(nursery):
    upstream = await start_upstream(nursery)
    async with run_gateway(proxy_config(upstream.port)) as gw:
        yield gw


@asynccontextmanager
async def canary(gw) -> AsyncIterator[SteadyLoad]:
    """GETs through the gateway all along; none may fail, and some must be served after."""
    load = SteadyLoad()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(load.client, url(gw, "/canary"))
        yield load
        served = load.served
        await eventually(lambda: load.served > served + 3)
        nursery.cancel_scope.cancel()
    assert load.failures == []


def own_origin(gw) -> str:
    return f"http://127.0.0.1:{gw.admin_port}"


async def test_cross_site_websocket_handshakes_are_refused(gateway):
    target = f"ws://127.0.0.1:{gateway.admin_port}/tasks/ws"

    def handshake(origin: str | None) -> int | str:
        try:
            with websockets.sync.client.connect(target, origin=origin, open_timeout=3) as ws:
                return json.loads(ws.recv(timeout=3))["tree"]["name"]
        except InvalidStatus as exc:
            assert b"cross-origin request refused" in exc.response.body
            return exc.response.status_code

    async with canary(gateway):
        assert await trio.to_thread.run_sync(handshake, EVIL) == 403
        assert await trio.to_thread.run_sync(handshake, "null") == 403
        # Another port of the same host is another origin (another local app's page).
        other_port = f"http://127.0.0.1:{gateway.admin_port + 1}"
        assert await trio.to_thread.run_sync(handshake, other_port) == 403
        # The dashboard's own handshake, and tools that send no Origin, are served.
        assert await trio.to_thread.run_sync(handshake, own_origin(gateway)) == "<init>"
        assert await trio.to_thread.run_sync(handshake, None) == "<init>"
    assert gateway.stats.value("admin.rq_refused") == 3


@pytest.mark.parametrize(
    "path",
    [
        "/quitquitquit",
        "/reload",
        "/healthcheck/fail",
        "/drain_listeners",
        "/reset_counters",
        "/tasks/1/cancel",
        "/logging?level=debug",
    ],
)
async def test_cross_site_state_changes_are_refused(gateway, path):
    async with canary(gateway), httpx.AsyncClient() as client:
        # What a page on another site can send without a CORS preflight: a form POST.
        form = {"content-type": "application/x-www-form-urlencoded"}
        by_origin = await client.post(admin_url(gateway, path), headers={"origin": EVIL, **form})
        by_fetch_metadata = await client.post(
            admin_url(gateway, path), headers={"sec-fetch-site": "cross-site", **form}
        )
        same_site = await client.post(
            admin_url(gateway, path),
            headers={"origin": own_origin(gateway), "sec-fetch-site": "same-site"},
        )
        await trio.sleep(0.1)  # long enough for a drain or a reload to have begun
    for refused in (by_origin, by_fetch_metadata, same_site):
        assert refused.status_code == 403
        assert refused.text.startswith("admin: cross-origin request refused (")
    assert by_origin.text == f"admin: cross-origin request refused (Origin: {EVIL})\n"
    assert not gateway.shutdown_requested.is_set() and not gateway.draining
    assert not gateway.state.healthcheck_failed
    assert gateway.reloads == 0
    assert gateway.stats.value("admin.rq_refused") == 3


async def test_a_refused_request_cannot_forge_a_log_line(gateway, caplog):
    # The refusal is logged with the path (which hypercorn percent-decodes) and the header
    # that caused it: a page could write lines of its own into the gateway's log.
    forged = "\n2026-12-02 14:00:00,000 WARNING gateway.server: forged"
    async with httpx.AsyncClient() as client:
        r = await client.post(
            admin_url(gateway, "/reload%0A2026-12-02%2014:00:00,000%20WARNING%20forged"),
            headers={"origin": EVIL.encode() + b"\x85forged"},  # NEL: a break to splitlines
        )
    assert r.status_code == 403
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("admin: ")]
    assert line == (
        r"admin: POST /reload\x0A2026-12-02 14:00:00,000 WARNING forged: cross-origin request "
        rf"refused (Origin: {EVIL}\x85forged)"
    )
    assert len(line.splitlines()) == 1 and forged not in line


async def test_same_origin_state_changes_and_tools_are_served(gateway):
    async with httpx.AsyncClient() as client:
        headers = {"origin": own_origin(gateway), "sec-fetch-site": "same-origin"}
        r = await client.post(admin_url(gateway, "/healthcheck/fail"), headers=headers)
        assert (r.status_code, r.text) == (200, "OK\n")
        assert gateway.state.healthcheck_failed
        r = await client.post(admin_url(gateway, "/healthcheck/ok"))  # curl: no Origin
        assert (r.status_code, r.text) == (200, "OK\n")
        # Any site may link to the dashboard: a GET changes nothing and is served.
        r = await client.get(admin_url(gateway, "/"), headers={"sec-fetch-site": "cross-site"})
        assert r.status_code == 200
        r = await client.post(admin_url(gateway, "/quitquitquit"), headers=headers)
        assert (r.status_code, r.text) == (200, "OK\n")
    assert gateway.shutdown_requested.is_set()
    assert gateway.stats.value("admin.rq_refused") == 0


async def test_a_dns_rebound_host_name_is_refused(gateway):
    port = gateway.admin_port
    async with canary(gateway), httpx.AsyncClient() as client:
        rebound = await client.get(
            admin_url(gateway, "/tasks"), headers={"host": f"evil.example:{port}"}
        )
        assert rebound.status_code == 403
        assert rebound.text.startswith(f"admin: Host 'evil.example:{port}' is not this admin")
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
            r = await client.get(admin_url(gateway, "/ready"), headers={"host": host})
            assert (r.status_code, r.text) == (200, "LIVE\n"), host
    assert gateway.stats.value("admin.rq_refused") == 1


async def test_tasks_hide_query_strings_unless_asked(gateway, nursery):
    hanging = await trio.open_tcp_stream("127.0.0.1", gateway.listener_ports["edge"])
    async with hanging, httpx.AsyncClient() as client:
        await hanging.send_all(b"GET /hang?token=secret HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_for_node(client, gateway, kind="stream")

        as_json = await client.get(admin_url(gateway, "/tasks"))
        as_text = await client.get(admin_url(gateway, "/tasks?format=text"))
        async with open_websocket_url(f"ws://127.0.0.1:{gateway.admin_port}/tasks/ws") as ws:
            over_ws = await ws.get_message()
        for shown in (as_json.text, as_text.text, over_ws):
            assert "secret" not in shown
            assert "/hang?[redacted]" in shown
        assert "stream 1 GET /hang?[redacted]" in as_text.text

        asked = await client.get(admin_url(gateway, "/tasks?format=text&show_query=true"))
        assert "stream 1 GET /hang?token=secret" in asked.text
        assert "path=/hang?token=secret" in asked.text
        url_asked = f"ws://127.0.0.1:{gateway.admin_port}/tasks/ws?show_query=true"
        async with open_websocket_url(url_asked) as ws:
            assert "/hang?token=secret" in await ws.get_message()
