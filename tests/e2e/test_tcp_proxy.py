"""tcp_proxy and the other network filters: raw bytes both ways with half-close, a client
that leaves takes its upstream with it, TLS passthrough by SNI, rbac and connection_limit."""

import socket
import struct
from typing import Any

import pytest
import trio

from tests.config_builder import ConfigBuilder, Table
from tests.helpers import eventually, run_gateway
from tests.tls_helpers import Pki, start_tcp_upstream, start_tls_echo_upstream, tls_exchange


def tcp_config(port: int, *filters: Table, **tcp_proxy: Any) -> ConfigBuilder:
    """Listener `edge` runs one filter chain: `filters`, then tcp_proxy (with the keys in
    `tcp_proxy`) to cluster `raw` at `port`."""
    config = ConfigBuilder(admin=False)
    proxy = {"type": "tcp_proxy", "cluster": "raw", "stat_prefix": "raw", **tcp_proxy}
    config.filter_chain("edge", filters=[*filters, proxy])
    config.cluster("raw", port, connect_timeout="1s")
    return config


async def test_bytes_both_ways_with_half_close(nursery):
    upstream = await start_tcp_upstream(nursery)
    async with run_gateway(tcp_config(upstream.port)) as gw:
        payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            await stream.send_all(payload)
            await stream.send_eof()  # the upstream answers only after our half-close
            reply = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some(65536):
                    reply += chunk
        assert upstream.received == [payload]
        assert reply == b"reply:" + payload[::-1]
        await eventually(
            lambda: gw.stats.value("tcp.raw.downstream_cx_tx_bytes_total") == len(reply)
        )
        assert gw.stats.value("tcp.raw.downstream_cx_rx_bytes_total") == len(payload)
        assert gw.stats.value("tcp.raw.downstream_cx_total") == 1


async def test_a_client_that_leaves_takes_the_upstream_with_it(nursery):
    upstream = await start_tcp_upstream(nursery, hold=True)
    async with run_gateway(tcp_config(upstream.port)) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        await stream.send_all(b"hello")
        await eventually(lambda: upstream.connections == 1)
        # Reset, as a client that crashed would: no half-close, just gone.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        left = trio.current_time()
        stream.socket.close()
        await eventually(lambda: upstream.eof_at, timeout=1)
        assert upstream.eof_at[0] - left < 0.1
        # The upstream keeps writing; the gateway finds the client gone and closes it.
        await eventually(lambda: upstream.closed_by_peer_at, timeout=2)
        assert upstream.received == [b"hello"]


async def test_connect_failure_tries_max_connect_attempts(nursery):
    dead = trio.socket.socket()
    await dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()  # nothing listens here
    async with run_gateway(tcp_config(port, max_connect_attempts=3)) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            with trio.fail_after(2):
                assert await stream.receive_some(10) == b""
        assert gw.stats.value("tcp.raw.upstream_connect_attempts_exceeded") == 1
        assert gw.stats.value("cluster.raw.upstream_cx_connect_fail") == 3


async def test_tls_passthrough_delivers_the_original_session(tmp_path, nursery):
    gateway_pki, upstream_pki = Pki(tmp_path), Pki(tmp_path)
    upstream = await start_tls_echo_upstream(
        nursery, upstream_pki.issue("pass.example.com", common_name="the-upstream")
    )
    terminated = gateway_pki.issue("other.example.com")
    config = ConfigBuilder(admin=False)
    config.filter_chain(
        filter_chain_match={"server_names": ["pass.example.com"]},
        filters=[{"type": "tcp_proxy", "cluster": "tls_backend", "stat_prefix": "pass"}],
    )
    config.filter_chain(
        filter_chain_match={"server_names": ["other.example.com"]},
        tls={"certificates": [terminated.table()]},
        filters=[{"type": "tcp_proxy", "cluster": "tls_backend", "stat_prefix": "terminated"}],
    )
    config.cluster("tls_backend", upstream.port)
    async with run_gateway(config) as gw:
        port = gw.listener_ports["edge"]
        # The client trusts only the upstream's CA and still completes its handshake: the
        # session is end to end, the gateway saw the ClientHello and nothing more.
        session = await tls_exchange(
            port, "pass.example.com", upstream_pki.client_context(["h2"]), b"ping", timeout=0.3
        )
        assert ("commonName", "the-upstream") in [
            kv for rdn in session.peer_cert["subject"] for kv in rdn
        ]
        assert session.alpn == "h2"
        assert session.response == b"echo:ping"
        assert upstream.server_names == ["pass.example.com"]
        assert upstream.alpns == ["h2"]
        assert gw.stats.value("listener.edge.ssl.handshake") == 0
        assert gw.stats.value("tcp.pass.downstream_cx_total") == 1


DENY_LOOPBACK = {"type": "rbac", "action": "deny", "source_cidrs": ["127.0.0.0/8"]}
ALLOW_LOOPBACK = {"type": "rbac", "source_cidrs": ["127.0.0.1/32"]}


@pytest.mark.parametrize(
    ("rbac", "stat", "expected"),
    [(DENY_LOOPBACK, "edge.rbac.denied", b""), (ALLOW_LOOPBACK, "edge.rbac.allowed", b"reply:ba")],
)
async def test_network_rbac(nursery, rbac, stat, expected):
    upstream = await start_tcp_upstream(nursery)
    async with run_gateway(tcp_config(upstream.port, rbac)) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        reply = b""
        async with stream:
            with trio.fail_after(2):
                try:
                    await stream.send_all(b"ab")
                    await stream.send_eof()
                    while chunk := await stream.receive_some(100):
                        reply += chunk
                except trio.BrokenResourceError:
                    pass  # refused: closed with our bytes unread, hence a reset
        assert reply == expected
        assert gw.stats.value(stat) == 1
        assert upstream.connections == (1 if expected else 0)


async def test_connection_limit(nursery):
    upstream = await start_tcp_upstream(nursery, hold=True)
    limit = {"type": "connection_limit", "max_connections": 1}
    async with run_gateway(tcp_config(upstream.port, limit)) as gw:
        port = gw.listener_ports["edge"]
        first = await trio.open_tcp_stream("127.0.0.1", port)
        await eventually(lambda: upstream.connections == 1)
        second = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(2):
            assert await second.receive_some(10) == b""
        assert gw.stats.value("connection_limit.edge.limited_connections") == 1
        assert gw.stats.value("connection_limit.edge.active_connections") == 1
        await first.aclose()
        await second.aclose()
        await eventually(lambda: gw.stats.value("connection_limit.edge.active_connections") == 0)
