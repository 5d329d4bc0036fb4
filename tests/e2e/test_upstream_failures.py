"""Broken upstreams get 502/503/504 with Envoy's response flags, in stats and the log."""

import json
import socket

import httpx
import trio

from tests.config_builder import proxy_config, route
from tests.helpers import (
    eventually,
    raw_exchange,
    run_gateway,
    start_scripted_upstream,
    start_upstream,
    url,
)


def closed_port() -> int:
    """A port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_connect_failure_is_502_uf(tmp_path):
    log = tmp_path / "access.json"
    access_log = {"path": str(log), "format": "json", "flush_interval": "0s"}
    config = proxy_config(closed_port(), listener={"access_log": access_log})
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/x"))
        assert r.status_code == 502
        assert "connection failure" in r.text
        await eventually(lambda: log.exists() and log.read_text())
        assert gw.stats.value("cluster.backend.upstream_cx_connect_fail") == 1
    entry = json.loads(log.read_text().splitlines()[0])
    assert entry["response_code"] == 502
    assert entry["response_flags"] == "UF"


async def test_cluster_without_endpoints_is_503_uh():
    async with run_gateway(proxy_config()) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/"))
        assert r.status_code == 503
        assert r.text == "no healthy upstream"
        assert gw.stats.value("cluster.backend.upstream_cx_none_healthy") == 1


async def test_route_timeout_is_504_ut_and_cancels_upstream(nursery):
    up = await start_upstream(nursery)
    routes = [route("/hang", cluster="backend", timeout="300ms")]
    async with run_gateway(proxy_config(up.port, routes=routes)) as gw, httpx.AsyncClient() as c:
        start = trio.current_time()
        r = await c.get(url(gw, "/hang"))
        assert r.status_code == 504
        assert r.text == "upstream request timeout"
        assert 0.25 < trio.current_time() - start < 2
        with trio.fail_after(1):
            await up.disconnected.wait()
        assert gw.stats.value("cluster.backend.upstream_rq_timeout") == 1
        assert gw.clusters.get("backend").hosts[0].stats.rq_timeout == 1
        await eventually(lambda: gw.stats.value("cluster.backend.upstream_cx_active") == 0)
        # The timed-out connection was discarded; the next request gets a fresh one.
        assert (await c.get(url(gw, "/ok"))).status_code == 200
        assert gw.stats.value("cluster.backend.upstream_cx_total") == 2


async def test_upstream_closing_before_headers_is_502_uc(nursery):
    port, _ = await start_scripted_upstream(nursery, b"")
    async with run_gateway(proxy_config(port)) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/"))
        assert r.status_code == 502
        assert "connection termination" in r.text


async def test_upstream_garbage_is_502(nursery):
    port, _ = await start_scripted_upstream(nursery, b"NOT HTTP AT ALL\r\n\r\n")
    async with run_gateway(proxy_config(port)) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/"))).status_code == 502


async def test_upstream_reset_mid_body_truncates_downstream(nursery):
    port, _ = await start_scripted_upstream(
        nursery, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part"
    )
    async with run_gateway(proxy_config(port)) as gw:
        out = await raw_exchange(gw.listener_ports["edge"], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 200 OK")
        assert out.endswith(b"only-part"), "the client sees a truncated body, then EOF"


async def test_oversized_upstream_head_is_502(nursery):
    port, _ = await start_scripted_upstream(
        nursery,
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 3000 + b"\r\nContent-Length: 2\r\n\r\nok",
    )
    async with (
        run_gateway(proxy_config(port, cluster={"max_response_headers_kb": 1})) as gw,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(url(gw, "/"))).status_code == 502


async def test_stream_idle_timeout_ends_a_stream_no_byte_moves_on(nursery):
    """A route with no timeout and an upstream that never answers: the stream idle timeout
    still ends the stream (408, flag SI) and the upstream sees the request go; a stream that
    keeps moving bytes is not cut, however long it lasts."""
    up = await start_upstream(nursery)
    config = proxy_config(
        up.port, listener={"stream_idle_timeout": "300ms"}, catch_all={"timeout": "0s"}
    )
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        start = trio.current_time()
        r = await client.get(url(gw, "/hang"))
        assert (r.status_code, r.text) == (408, "stream timeout")
        assert 0.25 < trio.current_time() - start < 2
        with trio.fail_after(1):
            await up.disconnected.wait()
        assert gw.stats.value("http.edge.downstream_rq_idle_timeout") == 1

        async def trickle():
            for _ in range(12):  # 1.2 s of upload, a chunk every 100 ms
                await trio.sleep(0.1)
                yield b"x" * 100

        r = await client.post(url(gw, "/discard"), content=trickle())
        assert (r.status_code, r.text) == (200, "1200"), "a stream that moves bytes is not idle"
        assert gw.stats.value("http.edge.downstream_rq_idle_timeout") == 1
        assert (await client.get(url(gw, "/ok"))).status_code == 200
