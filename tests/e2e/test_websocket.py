"""WebSocket through the gateway: HTTP/1.1 Upgrade and RFC 8441 over HTTP/2, with real
clients (trio-websocket, websockets) and real servers."""

import time

import h2.events
import httpx
import pytest
import trio
import websockets.sync.client
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, TextMessage

from tests.config_builder import proxy_config, route
from tests.helpers import RawH2Client, eventually, run_gateway, url
from tests.ws_echo import start_dying_server, start_echo_server

#: Listener keys: every route allows WebSocket upgrades unless it says otherwise ...
WEBSOCKET = {"upgrade": ["websocket"]}
#: ... as /plain does.
WS_ROUTES = [route("/plain", cluster="backend", upgrade=[])]


def ws_url(gw, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{gw.listener_ports['edge']}{path}"


@pytest.fixture
async def echo(nursery):
    return await start_echo_server(nursery)


@pytest.fixture
async def gateway(echo):
    async with run_gateway(proxy_config(echo.port, listener=WEBSOCKET, routes=WS_ROUTES)) as gw:
        yield gw


async def test_text_binary_and_large_messages(echo, gateway):
    async with open_websocket_url(ws_url(gateway)) as ws:
        await ws.send_message("hello")
        assert await ws.get_message() == "hello"
        await ws.send_message(b"\x00\x01binary")
        assert await ws.get_message() == b"\x00\x01binary"
        big = bytes(range(256)) * 4096  # 1 MiB
        await ws.send_message(big)
        assert await ws.get_message() == big
        await ws.ping(b"are you there")  # returns once the pong came back through the tunnel
    await eventually(lambda: gateway.stats.value("http.edge.downstream_cx_upgrades_active") == 0)
    assert gateway.stats.value("http.edge.downstream_cx_upgrades_total") == 1
    assert gateway.stats.value("http.edge.downstream_cx_upgrade_rx_bytes_total") > 1 << 20


async def test_websockets_library_client(echo, gateway):
    def talk() -> list[str]:
        with websockets.sync.client.connect(ws_url(gateway), max_size=None) as ws:
            replies = []
            for i in range(50):
                ws.send(f"message {i}")
                replies.append(ws.recv())
            return replies

    replies = await trio.to_thread.run_sync(talk)
    assert replies == [f"message {i}" for i in range(50)]


async def test_close_codes_pass_both_ways(echo, gateway):
    async with open_websocket_url(ws_url(gateway)) as ws:
        await ws.send_message("close:4002")
        with pytest.raises(ConnectionClosed) as info:
            await ws.get_message()
    assert info.value.reason.code == 4002
    assert info.value.reason.reason == "server bye"
    async with open_websocket_url(ws_url(gateway)) as ws:
        await ws.aclose(code=4001, reason="client bye")
    with trio.fail_after(2):
        await echo.closed.wait()
    assert echo.closes[0][:2] == (4001, "client bye")


async def test_upstream_refusing_the_upgrade_is_an_ordinary_response(echo, gateway):
    async with httpx.AsyncClient() as client:
        r = await client.get(
            url(gateway, "/reject"),
            headers={
                "connection": "upgrade",
                "upgrade": "websocket",
                "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
                "sec-websocket-version": "13",
            },
        )
    assert r.status_code == 403
    assert r.text == "no websockets for you"


async def test_route_without_upgrade_forwards_a_plain_request(echo, gateway):
    async with httpx.AsyncClient() as client:
        r = await client.get(
            url(gateway, "/plain"), headers={"connection": "upgrade", "upgrade": "websocket"}
        )
    # Forwarded without Upgrade, the WebSocket server sees a plain GET and refuses it.
    assert r.status_code == 426 or 400 <= r.status_code < 500
    assert echo.handshakes == []
    assert gateway.stats.value("http.edge.downstream_cx_upgrades_total") == 0


async def test_route_without_upgrade_can_reject(echo):
    listener = {"upgrade_not_allowed": "reject"}
    async with (
        run_gateway(proxy_config(echo.port, listener=listener, routes=WS_ROUTES)) as gw,
        httpx.AsyncClient() as client,
    ):
        r = await client.get(
            url(gw, "/ws"), headers={"connection": "upgrade", "upgrade": "websocket"}
        )
    assert r.status_code == 403


async def test_upstream_dying_mid_stream_closes_the_client(nursery):
    port = await start_dying_server(nursery)
    async with run_gateway(proxy_config(port, listener=WEBSOCKET)) as gw:
        async with open_websocket_url(ws_url(gw)) as ws:
            with pytest.raises(ConnectionClosed) as info, trio.fail_after(2):
                await ws.get_message()
        assert info.value.reason.code == 1006  # abnormal closure: the tunnel was cut


async def test_client_vanishing_closes_the_upstream_within_100ms(echo, gateway):
    stream = await _raw_upgrade(gateway.listener_ports["edge"])
    await eventually(lambda: gateway.stats.value("http.edge.downstream_cx_upgrades_active") == 1)
    stream.socket.close()  # vanish: no close frame
    left = time.monotonic()
    with trio.fail_after(2):
        await echo.closed.wait()
    assert echo.closes[0][2] - left < 0.1


async def test_task_tree_shows_the_tunnel(echo, gateway):
    async with open_websocket_url(ws_url(gateway)) as ws, httpx.AsyncClient() as client:
        await ws.send_message("x")
        await ws.get_message()
        tree = (await client.get(f"http://127.0.0.1:{gateway.admin_port}/tasks?format=text")).text
    assert "[tunnel] tunnel client->upstream" not in tree  # the pumps are plain children
    assert "[tunnel]" in tree and "bytes_up=" in tree


async def _extended_connect(port: int, path: str) -> tuple[RawH2Client, int]:
    """An RFC 8441 WebSocket CONNECT on a fresh HTTP/2 connection: (client, stream id)."""
    client = await RawH2Client.connect(port)
    await client.read_until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    assert client.conn.remote_settings.enable_connect_protocol == 1
    sid = client.conn.get_next_available_stream_id()
    client.conn.send_headers(
        sid,
        [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "x"),
            ("sec-websocket-version", "13"),
        ],
    )
    await client.flush()
    return client, sid


async def test_rfc8441_websocket_over_http2(echo, gateway):
    client, sid = await _extended_connect(gateway.listener_ports["edge"], "/ws")
    events = await client.read_until(lambda e: isinstance(e, h2.events.ResponseReceived))
    response = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert dict(response.headers)[b":status"] == b"200"
    ws = Connection(ConnectionType.CLIENT)
    client.conn.send_data(sid, ws.send(TextMessage(data="over h2")))
    await client.flush()

    def echoed(e) -> bool:
        if isinstance(e, h2.events.DataReceived):
            ws.receive_data(e.data)
            return True
        return False

    await client.read_until(echoed)
    messages = [e for e in ws.events() if isinstance(e, TextMessage | BytesMessage)]
    assert messages[0].data == "over h2"
    assert echo.handshakes[-1]["sec-websocket-version"] == "13"
    assert "sec-websocket-key" in echo.handshakes[-1]


async def _raw_upgrade(port: int, path: str = "/ws") -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    with trio.fail_after(2):
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    return stream


async def test_half_close_keeps_the_other_direction_open(echo, gateway):
    stream = await _raw_upgrade(gateway.listener_ports["edge"])
    ws = Connection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(TextMessage(data="last words")))
    await stream.send_eof()  # client is done sending; it still wants the reply
    received = b""
    with trio.fail_after(2):
        while chunk := await stream.receive_some(65536):
            received += chunk
    ws.receive_data(received)
    texts = [e.data for e in ws.events() if isinstance(e, TextMessage)]
    assert texts == ["last words"]


async def test_idle_and_max_duration_close_tunnels(echo):
    routes = [
        route("/idle", cluster="backend", tunnel_idle_timeout="300ms"),
        route("/short", cluster="backend", tunnel_max_duration="500ms"),
    ]
    async with run_gateway(proxy_config(echo.port, listener=WEBSOCKET, routes=routes)) as gw:
        async with open_websocket_url(ws_url(gw, "/idle")) as ws:
            start = trio.current_time()
            with pytest.raises(ConnectionClosed), trio.fail_after(3):
                await ws.get_message()
            assert 0.25 < trio.current_time() - start < 1.5
        async with open_websocket_url(ws_url(gw, "/short")) as ws:
            start = trio.current_time()
            with pytest.raises(ConnectionClosed), trio.fail_after(3):
                while True:  # busy, never idle: only the maximum duration can end it
                    await ws.send_message("tick")
                    await ws.get_message()
                    await trio.sleep(0.05)
            assert 0.4 < trio.current_time() - start < 1.5


async def test_refused_upgrade_does_not_poison_the_pool(echo, gateway):
    async with httpx.AsyncClient() as client:
        for _ in range(2):
            r = await client.get(
                url(gateway, "/reject"),
                headers={
                    "connection": "upgrade",
                    "upgrade": "websocket",
                    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
                    "sec-websocket-version": "13",
                },
            )
            assert r.status_code == 403
    async with open_websocket_url(ws_url(gateway)) as ws:
        await ws.send_message("still fine")
        with trio.fail_after(2):
            assert await ws.get_message() == "still fine"


async def test_http2_tunnel_cut_by_idle_timeout_is_reset(echo):
    routes = [route("/idle", cluster="backend", tunnel_idle_timeout="200ms")]
    async with run_gateway(proxy_config(echo.port, listener=WEBSOCKET, routes=routes)) as gw:
        client, _ = await _extended_connect(gw.listener_ports["edge"], "/idle")
        events = await client.read_until(
            lambda e: isinstance(e, h2.events.StreamReset | h2.events.StreamEnded)
        )
        assert any(isinstance(e, h2.events.StreamReset) for e in events)


def test_tunnel_routes_need_http1_clusters():
    from gateway import ConfigError, loads_config

    config = proxy_config(1, listener=WEBSOCKET, cluster={"protocol": "http2"})
    with pytest.raises(ConfigError) as info:
        loads_config(config.toml())
    assert info.value.errors == [
        "virtual_hosts.main.routes[0]: allows upgrades (WebSocket), which need an http1 "
        "cluster; 'backend' is http2"
    ]
