"""Hot reload: a new config taken under load without a failed request or a reset."""

import json
import signal
import threading
from functools import partial
from pathlib import Path

import grpc
import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from gateway import open_gateway
from gateway.config import load_config
from tests.config_builder import ConfigBuilder, local, proxy_config
from tests.grpc_echo import OPTIONS, echo_config, start_server
from tests.helpers import SteadyLoad, admin_url, free_port, serving, start_upstream, url
from tests.ws_echo import start_echo_server


def reload_config(version: int, endpoint: int, *, idle_timeout: str = "300s") -> ConfigBuilder:
    """Listeners `edge` (its idle timeout a setting a reload may change) and `steady` route
    to `endpoint`; every answer says the config `version` in x-config-version."""
    version_header = {"response_headers_to_add": {"x-config-version": str(version)}}
    config = proxy_config(
        endpoint, listener={"idle_timeout": idle_timeout}, catch_all=version_header
    )
    config.server(drain_timeout="5s", drain_grace="200ms")
    config.listener("steady", virtual_hosts=["main"])
    return config


async def post_reload(client: httpx.AsyncClient, gw: object) -> httpx.Response:
    return await client.post(admin_url(gw, "/reload"))  # type: ignore[arg-type]


async def test_ten_reloads_under_http1_and_http2_load(nursery, tmp_path: Path):
    ups = [await start_upstream(nursery, "a"), await start_upstream(nursery, "b")]
    path = tmp_path / "gateway.toml"
    path.write_text(reload_config(0, ups[0].port).toml())
    http1, http2 = SteadyLoad(), SteadyLoad()
    async with open_gateway(load_config(path), str(path)) as gw:
        port = gw.listener_ports["edge"]

        # HTTP/2 clients use the listener whose settings never change: httpx fails the
        # streams in flight on any GOAWAY (httpcore#1054), so the GOAWAY drain of a changed
        # listener is proven with grpcio in the next test.
        http1_target, http2_target = url(gw, "/item"), url(gw, "/item", listener="steady")

        async with trio.open_nursery() as clients, httpx.AsyncClient() as admin:
            for _ in range(3):
                clients.start_soon(partial(http1.client, http1_target, label="http1: "))
            for _ in range(2):
                clients.start_soon(
                    partial(http2.client, http2_target, label="http2: ", http1=False, http2=True)
                )
            for version in range(1, 11):
                await trio.sleep(0.2)
                # Every other reload moves the cluster to the other upstream; every third
                # changes a listener setting (its connections drain, its socket stays).
                idle = "300s" if version % 3 else f"{300 + version}s"
                path.write_text(
                    reload_config(version, ups[version % 2].port, idle_timeout=idle).toml()
                )
                answer = await post_reload(admin, gw)
                assert answer.status_code == 200, answer.text
                # From now on every request follows the new route and cluster, on any
                # connection, new or kept alive.
                async with httpx.AsyncClient() as fresh:
                    response = await fresh.get(url(gw, "/after"))
                assert response.headers["x-config-version"] == str(version)
                assert response.json()["server"] == ("a", "b")[version % 2]
            await trio.sleep(0.3)
            clients.cancel_scope.cancel()
        assert gw.listener_ports["edge"] == port  # the socket was never closed
        assert gw.reloads == 10
    assert http1.failures + http2.failures == []
    assert http1.served > 100 and http2.served > 50


async def test_keep_alive_connections_follow_new_routes(nursery, tmp_path: Path):
    up = await start_upstream(nursery)
    path = tmp_path / "gateway.toml"
    path.write_text(reload_config(1, up.port).toml())
    async with open_gateway(load_config(path), str(path)) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/"))).headers["x-config-version"] == "1"
        path.write_text(reload_config(2, up.port).toml())
        assert (await post_reload(client, gw)).status_code == 200
        # Same keep-alive connection (httpx reuses it): the new route applies.
        assert (await client.get(url(gw, "/"))).headers["x-config-version"] == "2"
        assert gw.stats.value("listener.edge.downstream_cx_total") == 1


async def test_an_invalid_config_is_rejected_and_the_old_one_serves(nursery, tmp_path: Path):
    up = await start_upstream(nursery)
    path = tmp_path / "gateway.toml"
    path.write_text(reload_config(1, up.port).toml())
    async with open_gateway(load_config(path), str(path)) as gw, httpx.AsyncClient() as client:
        broken = reload_config(2, up.port)
        broken.routes()[0]["cluster"] = "nope"
        path.write_text(broken.toml())
        answer = await post_reload(client, gw)
        assert answer.status_code == 400
        assert answer.json()["errors"] == [
            "virtual_hosts.main.routes[0].cluster: no cluster named 'nope'"
        ]
        assert (await client.get(url(gw, "/"))).headers["x-config-version"] == "1"
        assert (await client.get(admin_url(gw, "/reload"))).status_code == 405


async def test_a_listener_that_cannot_bind_rejects_the_reload(nursery, tmp_path: Path):
    up = await start_upstream(nursery)
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    path = tmp_path / "gateway.toml"
    path.write_text(reload_config(1, up.port).toml())
    second = reload_config(2, up.port)
    second.listener("second", address=local(busy), virtual_hosts=["main"])
    async with open_gateway(load_config(path), str(path)) as gw, httpx.AsyncClient() as client:
        path.write_text(second.toml())
        answer = await post_reload(client, gw)
        assert answer.status_code == 400
        assert "listeners.second: cannot bind" in answer.json()["errors"][0]
        assert (await client.get(url(gw, "/"))).headers["x-config-version"] == "1"
        assert set(gw.listeners) == {"edge", "steady"}
    taken.close()


async def test_watch_reloads_when_the_file_changes(nursery, tmp_path: Path):
    up = await start_upstream(nursery)
    path = tmp_path / "gateway.toml"

    def watched(version: int) -> str:
        config = reload_config(version, up.port)
        config.server(watch=True)
        return config.toml()

    path.write_text(watched(1))
    async with open_gateway(load_config(path), str(path)) as gw, httpx.AsyncClient() as client:
        path.write_text(watched(2))
        with trio.fail_after(5):
            while gw.reloads == 0:
                await trio.sleep(0.1)
        assert (await client.get(url(gw, "/"))).headers["x-config-version"] == "2"
        body = json.loads((await client.get(admin_url(gw, "/server_info"))).text)
        assert body["state"] == "LIVE"


async def test_sighup_reloads_a_served_config(nursery, tmp_path: Path):
    up = await start_upstream(nursery)
    path = tmp_path / "gateway.toml"
    path.write_text(reload_config(1, up.port).toml())
    async with serving(path) as served, httpx.AsyncClient() as client:
        target = f"http://127.0.0.1:{served.port}/"
        assert (await client.get(target)).headers["x-config-version"] == "1"
        path.write_text(reload_config(2, up.port).toml())
        served.process.send_signal(signal.SIGHUP)
        with trio.fail_after(5):
            while (await client.get(target)).headers["x-config-version"] != "2":
                await trio.sleep(0.05)
        # A broken file is refused; the process keeps serving the last good config.
        path.write_text("[listeners.edge\n")
        served.process.send_signal(signal.SIGHUP)
        await served.read_log_until(b"reload rejected")
        assert (await client.get(target)).headers["x-config-version"] == "2"
        served.process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            assert await served.process.wait() == 0


async def test_a_tunnel_outlives_reloads_until_the_drain_timeout(nursery, tmp_path: Path):
    echo = await start_echo_server(nursery)
    path = tmp_path / "gateway.toml"

    def text(version: int, idle: str) -> str:
        config = reload_config(version, echo.port, idle_timeout=idle)
        config.server(drain_timeout="1s")
        config.listener("edge", upgrade=["websocket"])
        return config.toml()

    path.write_text(text(1, "300s"))
    async with open_gateway(load_config(path), str(path)) as gw, httpx.AsyncClient() as admin:
        ws_url = f"ws://127.0.0.1:{gw.listener_ports['edge']}/ws"
        async with open_websocket_url(ws_url) as ws:
            # Routes change, listener settings do not: the tunnel carries on indefinitely.
            path.write_text(text(2, "300s"))
            assert (await post_reload(admin, gw)).status_code == 200
            await trio.sleep(1.2)
            await ws.send_message("still here")
            assert await ws.get_message() == "still here"
            # The listener changes: its connections drain, and a tunnel has until the drain
            # timeout (1s) before it is cut.
            path.write_text(text(3, "301s"))
            assert (await post_reload(admin, gw)).status_code == 200
            await trio.sleep(0.5)
            await ws.send_message("in the drain window")
            assert await ws.get_message() == "in the drain window"
            with trio.fail_after(2), pytest.raises(ConnectionClosed):
                await ws.get_message()


def grpc_config(port: int, idle: int, upstream: int) -> str:
    """Listener `edge` on `port`, with an idle timeout of `idle` seconds, to the gRPC
    server at `upstream`."""
    config = echo_config(upstream)
    config.server(drain_timeout="5s", drain_grace="200ms")
    config.listener("edge", address=local(port), idle_timeout=f"{idle}s")
    return config.toml()


async def test_http2_goaway_drain_under_grpc_load(tmp_path: Path):
    """Every reload changes the listener, so every reload drains the gRPC client's HTTP/2
    connection with GOAWAY; grpcio moves to a new connection and no call fails."""
    server, upstream, _ = start_server()
    path = tmp_path / "gateway.toml"
    port = free_port()
    path.write_text(grpc_config(port, 300, upstream))
    failures: list[str] = []
    calls = 0
    stop = threading.Event()

    def worker() -> None:
        nonlocal calls
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=OPTIONS)
        unary = channel.unary_unary("/test.Echo/Unary")
        while not stop.is_set():
            try:
                assert unary(b"ping", timeout=10) == b"ping"
                calls += 1
            except grpc.RpcError as exc:
                failures.append(f"{exc.code()}: {exc.details()}")
        channel.close()

    try:
        async with open_gateway(load_config(path), str(path)) as gw, httpx.AsyncClient() as admin:
            threads = [threading.Thread(target=worker) for _ in range(3)]
            for thread in threads:
                thread.start()
            try:
                for reload in range(1, 6):
                    await trio.sleep(0.3)
                    path.write_text(grpc_config(port, 300 + reload, upstream))
                    answer = await post_reload(admin, gw)
                    assert answer.json()["changes"] == ["listener edge changed"]
                await trio.sleep(0.3)
            finally:
                stop.set()
                await trio.to_thread.run_sync(lambda: [t.join() for t in threads])
            drained = gw.stats.value("http.edge.downstream_cx_drain_close")
    finally:
        server.stop(None)
    assert failures == []
    assert calls > 50
    assert drained is not None
