"""Proxying HTTP/1.1 end to end: headers, keep-alive, pipelining, streaming, framing."""

import json

import httpx
import pytest
import trio

from tests.config_builder import proxy_config
from tests.helpers import (
    eventually,
    raw_exchange,
    read_until,
    run_gateway,
    start_scripted_upstream,
    start_upstream,
    url,
)


async def test_proxies_and_adds_edge_headers(nursery):
    up = await start_upstream(nursery)
    mark = {
        "type": "header_mutation",
        "request_headers_to_add": {"x-gateway": "1"},
        "response_headers_to_add": {"x-served-by": "gateway"},
    }
    async with (
        run_gateway(proxy_config(up.port, http_filters={"mark": mark})) as gw,
        httpx.AsyncClient() as client,
    ):
        r = await client.get(url(gw, "/hello?q=1"), headers={"x-forwarded-for": "10.0.0.9"})
        assert r.status_code == 200
        seen = r.json()
        assert seen["path"] == "/hello?q=1"
        h = seen["headers"]
        assert h["x-gateway"] == "1"
        assert h["x-forwarded-for"] == "10.0.0.9, 127.0.0.1"
        assert h["x-forwarded-proto"] == "http"
        assert len(h["x-request-id"]) == 36
        assert r.headers["x-served-by"] == "gateway"
        assert r.headers["x-upstream"] == "upstream"
        assert "x-envoy-upstream-service-time" in r.headers
        r2 = await client.get(url(gw, "/"), headers={"x-request-id": "abc-123"})
        assert r2.json()["headers"]["x-request-id"] == "abc-123"


@pytest.mark.parametrize("parser", ["llhttp", "h11"])
async def test_keep_alive_reuses_both_connections(nursery, parser):
    up = await start_upstream(nursery)
    config = proxy_config(
        up.port, listener={"http1_parser": parser}, cluster={"http1_parser": parser}
    )
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        for i in range(5):
            r = await client.get(url(gw, f"/n/{i}"))
            assert r.json()["path"] == f"/n/{i}"
        assert gw.stats.value("listener.edge.downstream_cx_total") == 1
        assert gw.stats.value("cluster.backend.upstream_cx_total") == 1
        await eventually(lambda: gw.stats.value("http.edge.downstream_rq_2xx") == 5)


async def test_pipelined_requests_answered_in_order(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        requests = (
            b"".join(f"GET /p/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(3))
            + b"GET /p/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        out = await raw_exchange(gw.listener_ports["edge"], requests)
        assert out.count(b"HTTP/1.1 200 OK") == 4
        positions = [out.index(f'"/p/{i}"'.encode()) for i in (0, 1, 2, "last")]
        assert positions == sorted(positions)


async def test_request_body_streams_before_it_is_complete(nursery):
    """The upstream sees the first chunk while the client still holds the rest back,
    which is only possible if the gateway forwards without buffering the whole body."""
    up = await start_upstream(nursery)

    async def body():
        yield b"a" * 1000
        with trio.fail_after(5):
            await up.first_chunk.wait()
        for _ in range(100):
            yield b"b" * 100_000

    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        r = await client.post(url(gw, "/upload"), content=body())
        assert r.status_code == 200
        assert r.json()["body_bytes"] == 1000 + 100 * 100_000
        assert r.json()["headers"]["transfer-encoding"] == "chunked"


async def test_content_length_body_forwarded_with_length(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        r = await client.put(url(gw, "/cl"), content=b"z" * 300_000)
        assert r.json()["body_bytes"] == 300_000
        assert r.json()["headers"]["content-length"] == "300000"
        assert "transfer-encoding" not in r.json()["headers"]


async def test_response_body_streams(nursery):
    """The client reads the first chunk while the upstream holds the second back."""
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        async with client.stream("GET", url(gw, "/stream")) as r:
            chunks = r.aiter_raw()
            with trio.fail_after(5):
                first = await chunks.__anext__()
            assert first == b"first\n"
            up.release.set()
            rest = b"".join([c async for c in chunks])
        assert rest == b"second\n"


async def test_large_response_body(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/big?size=5000000"))
        assert len(r.content) == 5_000_000


async def test_expect_100_continue(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            await stream.send_all(
                b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
            )
            interim = await read_until(stream, b"\r\n\r\n")
            assert interim.startswith(b"HTTP/1.1 100 ")
            await stream.send_all(b"hello")
            out = await read_until(stream, b'"body_bytes": 5}')
        assert b"HTTP/1.1 200 OK" in out
        assert up.requests[0].headers.get("expect") is None


async def test_head_204_304_keep_connection_usable(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        head = await client.head(url(gw, "/"))
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) > 0
        assert (await client.get(url(gw, "/status/204"))).status_code == 204
        r304 = await client.get(url(gw, "/status/304"))
        assert r304.status_code == 304 and r304.headers["etag"] == '"x"'
        assert (await client.get(url(gw, "/after"))).json()["path"] == "/after"
        assert gw.stats.value("listener.edge.downstream_cx_total") == 1


async def test_hop_by_hop_headers_removed(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        out = await raw_exchange(
            gw.listener_ports["edge"],
            b"GET /h HTTP/1.1\r\nHost: x\r\nConnection: close, x-private\r\nx-private: 1\r\n"
            b"Keep-Alive: timeout=5\r\nTE: trailers, deflate\r\nProxy-Connection: keep-alive\r\n"
            b"Upgrade: h2c\r\nx-kept: yes\r\n\r\n",
        )
    body = json.loads(out.partition(b"\r\n\r\n")[2])
    for name in ("x-private", "keep-alive", "proxy-connection", "upgrade"):
        assert name not in body["headers"], name
    assert body["headers"]["x-kept"] == "yes"
    assert body["headers"]["te"] == "trailers", "only te: trailers survives, as in Envoy"


async def test_http10_client(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        out = await raw_exchange(gw.listener_ports["edge"], b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK")
    assert b'"/old"' in out


async def test_access_log_envoy_format(nursery, tmp_path):
    up = await start_upstream(nursery)
    log = tmp_path / "access.log"
    access_log = {"path": str(log), "flush_interval": "0s"}
    async with (
        run_gateway(proxy_config(up.port, listener={"access_log": access_log})) as gw,
        httpx.AsyncClient() as client,
    ):
        await client.post(
            url(gw, "/logged?x=1"),
            content=b"12345",
            headers={"user-agent": "tester", "x-request-id": "rid-1"},
        )
        await eventually(lambda: log.exists() and log.read_text())
    line = log.read_text().splitlines()[0]
    assert line.startswith("[20")
    assert '"POST /logged?x=1 HTTP/1.1" 200 - 5 ' in line
    authority = f"127.0.0.1:{gw.listener_ports['edge']}"
    assert f'"127.0.0.1" "tester" "rid-1" "{authority}" "127.0.0.1:{up.port}"' in line


async def test_hop_by_hop_response_headers_removed(nursery):
    port, _ = await start_scripted_upstream(
        nursery,
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, x-secret\r\n"
        b"x-secret: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nx-kept: y\r\n\r\nok",
    )
    async with run_gateway(proxy_config(port)) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/"))
    assert r.text == "ok"
    for name in ("x-secret", "keep-alive", "proxy-authenticate"):
        assert name not in r.headers, name
    assert r.headers["x-kept"] == "y"


async def test_upgrade_request_with_a_body_is_served_and_closes(nursery):
    # llhttp hands an upgrade request's body over unparsed; the codec reads it as the body
    # of an ordinary request, and the connection closes after the answer.
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        start = trio.current_time()
        out = await raw_exchange(
            gw.listener_ports["edge"],
            b"POST /u HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
            b"Content-Length: 5\r\n\r\nhello",
            read_timeout=5,
        )
        assert trio.current_time() - start < 2, "closed after the answer, not at a timeout"
    assert out.startswith(b"HTTP/1.1 200 OK")
    assert b"connection: close" in out.lower()
    assert json.loads(out.partition(b"\r\n\r\n")[2])["body_bytes"] == 5


async def test_connect_closes_after_its_response(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        start = trio.current_time()
        out = await raw_exchange(
            gw.listener_ports["edge"],
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            read_timeout=5,
        )
        assert trio.current_time() - start < 2, "closed after the answer, not at a timeout"
    assert out.startswith(b"HTTP/1.1 ")
    assert b"connection: close" in out.lower()
