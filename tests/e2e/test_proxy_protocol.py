"""PROXY protocol: the client address from an L4 balancer in front, and to upstreams."""

import json
import shutil
import socket
import struct
import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.config_builder import ConfigBuilder, proxy_config
from tests.helpers import free_port, read_until, run_gateway, start_upstream

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxied_config(port: int, log: Path) -> ConfigBuilder:
    """Listener `edge` takes PROXY headers and logs each request as JSON to `log`."""
    access_log = {"path": str(log), "format": "json", "flush_interval": "0s"}
    return proxy_config(port, listener={"proxy_protocol": True, "access_log": access_log})


async def test_v1_and_v2_headers_give_the_client_address(nursery, tmp_path):
    up = await start_upstream(nursery)
    log = tmp_path / "access.log"
    async with run_gateway(proxied_config(up.port, log)) as gw:
        port = gw.listener_ports["edge"]
        v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 40001 80\r\n"
        v2 = SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 12)
        v2 += socket.inet_aton("198.51.100.9") + socket.inet_aton("127.0.0.1")
        v2 += struct.pack("!HH", 40002, 80)
        for header in (v1, v2):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            # Header and request in one write: the header must be taken, not the request.
            await stream.send_all(header + b"GET /who HTTP/1.1\r\nhost: x\r\n\r\n")
            assert b" 200 " in (await read_until(stream, b"\r\n\r\n")).split(b"\r\n")[0] + b" "
            await stream.aclose()
    seen = [r.headers["x-forwarded-for"] for r in up.requests]
    assert seen == ["203.0.113.7", "198.51.100.9"]
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [x["downstream_remote_address"] for x in lines] == [
        "203.0.113.7:40001",
        "198.51.100.9:40002",
    ]


async def test_a_connection_without_the_header_is_closed(nursery, tmp_path):
    up = await start_upstream(nursery)
    async with run_gateway(proxied_config(up.port, tmp_path / "a.log")) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        with trio.fail_after(2):
            try:
                answer = await stream.receive_some(100)
            except trio.BrokenResourceError:  # closed with our request unread: a reset
                answer = b""
        assert answer == b""
        assert gw.stats.value("listener.edge.downstream_cx_proxy_proto_error") == 1
    assert up.requests == []


async def test_a_v1_address_with_a_zone_is_refused(nursery, tmp_path):
    """An IPv6 zone (`%` then any byte but a space) would be the client's address as
    written: here it forges an x-forwarded-for hop. The connection is closed and counted;
    a well-formed header on another connection is served meanwhile."""
    up = await start_upstream(nursery)
    async with run_gateway(proxied_config(up.port, tmp_path / "a.log")) as gw:
        port = gw.listener_ports["edge"]
        request = b"GET /who HTTP/1.1\r\nhost: x\r\n\r\n"
        forged = await trio.open_tcp_stream("127.0.0.1", port)
        await forged.send_all(b"PROXY TCP6 fe80::1%,10.0.0.1 ::1 40001 80\r\n" + request)
        canary = await trio.open_tcp_stream("127.0.0.1", port)
        await canary.send_all(b"PROXY TCP4 203.0.113.7 127.0.0.1 40002 80\r\n" + request)
        assert b" 200 " in await read_until(canary, b"\r\n\r\n")
        with trio.fail_after(2):
            try:
                answer = await forged.receive_some(100)
            except trio.BrokenResourceError:  # closed with our request unread: a reset
                answer = b""
        assert answer == b""
        assert gw.stats.value("listener.edge.downstream_cx_proxy_proto_error") == 1
        await canary.aclose()
        await forged.aclose()
    assert [r.headers["x-forwarded-for"] for r in up.requests] == ["203.0.113.7"]


async def test_tcp_proxy_sends_a_v2_header_upstream(nursery):
    received = trio.Event()
    got: list[bytes] = []

    async def upstream(stream: trio.SocketStream) -> None:
        data = b""
        while len(data) < 28 + 5:
            chunk = await stream.receive_some(100)
            if not chunk:
                break
            data += chunk
        got.append(data)
        received.set()

    listeners = await nursery.start(partial(trio.serve_tcp, upstream, 0, host="127.0.0.1"))
    upstream_port = listeners[0].socket.getsockname()[1]
    config = ConfigBuilder(admin=False)
    config.filter_chain("l4", filters=[{"type": "tcp_proxy", "cluster": "db"}])
    config.cluster("db", upstream_port, proxy_protocol="v2")
    async with run_gateway(config) as gw:
        client = trio.socket.socket()
        await client.bind(("127.0.0.1", 0))
        client_port = client.getsockname()[1]
        await client.connect(("127.0.0.1", gw.listener_ports["l4"]))
        stream = trio.SocketStream(client)
        await stream.send_all(b"hello")
        with trio.fail_after(2):
            await received.wait()
        await stream.aclose()
    expected = SIGNATURE + struct.pack("!BBH", 0x21, 0x11, 12)
    expected += socket.inet_aton("127.0.0.1") * 2
    expected += struct.pack("!HH", client_port, gw.listener_ports["l4"])
    assert got == [expected + b"hello"]


@pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="needs HAProxy: apt-get install haproxy"
)
async def test_behind_haproxy_with_send_proxy_v2(nursery, tmp_path):
    up = await start_upstream(nursery)
    log = tmp_path / "access.log"
    async with run_gateway(proxied_config(up.port, log)) as gw:
        front = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(
            f"""
defaults
  mode tcp
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend front
  bind 127.0.0.1:{front}
  default_backend gateways
backend gateways
  server gw 127.0.0.1:{gw.listener_ports["edge"]} send-proxy-v2
"""
        )
        haproxy = await trio.lowlevel.open_process(
            ["haproxy", "-f", str(cfg), "-db"], stderr=subprocess.DEVNULL
        )
        try:
            with trio.fail_after(5):
                while True:
                    try:
                        stream = await trio.open_tcp_stream("127.0.0.1", front)
                        break
                    except OSError:
                        await trio.sleep(0.05)
            await stream.aclose()
            # The client comes from a port of its own choosing: the log must show that
            # port, not the one HAProxy connected to the gateway from.
            client = trio.socket.socket()
            await client.bind(("127.0.0.1", 0))
            client_port = client.getsockname()[1]
            await client.connect(("127.0.0.1", front))
            stream = trio.SocketStream(client)
            await stream.send_all(b"GET /x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            assert b" 200 " in await read_until(stream, b"\r\n\r\n")
            await stream.aclose()
        finally:
            haproxy.kill()
            await haproxy.wait()
    remotes = [
        json.loads(line)["downstream_remote_address"] for line in log.read_text().splitlines()
    ]
    assert f"127.0.0.1:{client_port}" in remotes
