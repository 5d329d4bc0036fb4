"""wss:// through a TLS listener: when the upstream closes or dies, the client is told at
once, although TLS cannot carry a half-close (a real `websockets` client, real upstreams),
while a bystander tunnel on the same listener keeps talking."""

import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import websockets.sync.client
from trio_websocket import open_websocket
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

from tests.config_builder import ConfigBuilder, route
from tests.helpers import eventually, run_gateway
from tests.tls_helpers import Pki
from tests.ws_echo import start_dying_server, start_echo_server


def wss_config(pki: Pki, echo_port: int, doomed_port: int, **echo: Any) -> ConfigBuilder:
    """A TLS listener (HTTP/1.1 only, WebSocket upgrades allowed): /doomed goes to cluster
    `doomed`, everything else to cluster `echo` (with the keys in `echo`)."""
    cert = pki.issue("localhost", "127.0.0.1")
    config = ConfigBuilder()
    config.server(drain_timeout="1s")
    config.filter_chain(
        tls={"certificates": [cert.table()], "alpn_protocols": ["http/1.1"]},
        filters=[
            {"type": "http_connection_manager", "virtual_hosts": ["main"], "upgrade": ["websocket"]}
        ],
    )
    config.virtual_host("main", route("/doomed", cluster="doomed"), route(cluster="echo"))
    config.cluster("echo", echo_port, **echo)
    config.cluster("doomed", doomed_port)
    return config


@attrs.define
class Bystander:
    """Round trips on a tunnel of its own, counted, each within its deadline."""

    round_trips: int = 0
    slowest: float = 0.0


@asynccontextmanager
async def bystander(port: int, context: ssl.SSLContext) -> AsyncIterator[Bystander]:
    seen = Bystander()
    async with (
        open_websocket("127.0.0.1", port, "/echo", use_ssl=context) as ws,
        trio.open_nursery() as nursery,
    ):

        async def chat() -> None:
            while True:
                start = time.monotonic()
                with trio.fail_after(1):
                    await ws.send_message(f"ping {seen.round_trips}")
                    assert await ws.get_message() == f"ping {seen.round_trips}"
                seen.slowest = max(seen.slowest, time.monotonic() - start)
                seen.round_trips += 1
                await trio.sleep(0.01)

        nursery.start_soon(chat)
        yield seen
        before = seen.round_trips
        await eventually(lambda: seen.round_trips > before + 3)
        nursery.cancel_scope.cancel()


@pytest.fixture
async def setup(tmp_path, nursery):
    pki = Pki(tmp_path)
    echo = await start_echo_server(nursery)
    die = trio.Event()
    doomed = await start_dying_server(nursery, die)
    async with run_gateway(wss_config(pki, echo.port, doomed)) as gw:
        yield gw, pki.client_context(), die


async def test_upstream_close_completes_the_client_close_handshake_promptly(setup):
    gw, context, _ = setup
    target = f"wss://127.0.0.1:{gw.listener_ports['edge']}/echo"

    def closed_by_upstream() -> tuple[float, int | None, str | None]:
        with websockets.sync.client.connect(target, ssl=context, close_timeout=10) as ws:
            ws.send("hello")
            assert ws.recv(timeout=2) == "hello"
            start = time.monotonic()
            ws.send("close:1000")
            with pytest.raises(ConnectionClosedOK):
                ws.recv(timeout=5)
        # Leaving the block waits for the connection to end (up to close_timeout).
        return time.monotonic() - start, ws.close_code, ws.close_reason

    async with bystander(gw.listener_ports["edge"], context) as seen:
        took, code, reason = await trio.to_thread.run_sync(closed_by_upstream)
    assert (code, reason) == (1000, "server bye")
    assert took < 1.0
    await eventually(lambda: gw.stats.value("http.edge.downstream_cx_upgrades_active") == 0)
    assert seen.slowest < 0.5


async def test_upstream_that_dies_closes_the_client_at_once(setup):
    gw, context, die = setup
    target = f"wss://127.0.0.1:{gw.listener_ports['edge']}/doomed"
    ready = trio.Event()

    def cut_off() -> float:
        with websockets.sync.client.connect(target, ssl=context, close_timeout=1) as ws:
            trio.from_thread.run_sync(ready.set)
            # Without the fix the tunnel lingers until its idle timeout (1h): this times out.
            with pytest.raises(ConnectionClosedError):
                ws.recv(timeout=5)
            return time.monotonic()

    async with bystander(gw.listener_ports["edge"], context) as seen, trio.open_nursery() as n:
        ended: list[float] = []

        async def victim() -> None:
            ended.append(await trio.to_thread.run_sync(cut_off))

        n.start_soon(victim)
        await ready.wait()
        await eventually(lambda: gw.stats.value("http.edge.downstream_cx_upgrades_active") == 2)
        died = time.monotonic()
        die.set()  # the upstream's socket closes, no close frame
    assert ended[0] - died < 1.0
    await eventually(lambda: gw.stats.value("http.edge.downstream_cx_upgrades_active") == 0)
    assert seen.slowest < 0.5


async def test_a_wss_upstream_behind_a_tls_cluster(tmp_path, nursery):
    """TLS on both sides: neither can be half-closed, so either side's close ends it all."""
    pki = Pki(tmp_path)
    upstream_cert = pki.issue("127.0.0.1")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(upstream_cert.certificate_chain, upstream_cert.private_key)
    echo = await start_echo_server(nursery, server_context)
    tls = {"trusted_ca": pki.ca_file}
    async with run_gateway(wss_config(pki, echo.port, 1, tls=tls)) as gw:
        target = f"wss://127.0.0.1:{gw.listener_ports['edge']}/echo"
        context = pki.client_context()

        def talk_then_close(closer: str) -> float:
            with websockets.sync.client.connect(target, ssl=context, close_timeout=10) as ws:
                ws.send("over tls twice")
                assert ws.recv(timeout=2) == "over tls twice"
                start = time.monotonic()
                if closer == "upstream":
                    ws.send("close:1000")
                    with pytest.raises(ConnectionClosedOK):
                        ws.recv(timeout=5)
                else:
                    ws.close(code=1000, reason="client bye")
            return time.monotonic() - start

        assert await trio.to_thread.run_sync(talk_then_close, "upstream") < 1.0
        assert await trio.to_thread.run_sync(talk_then_close, "client") < 1.0
        with trio.fail_after(2):
            await echo.closed.wait()
        assert echo.closes[0][:2] == (1000, "client bye")
        await eventually(lambda: gw.stats.value("http.edge.downstream_cx_upgrades_active") == 0)
