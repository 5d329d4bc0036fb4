"""HTTP/1.1 parsed by h11 (`http1_parser = "h11"`) on a listener and on a cluster, over real
sockets: it proxies (keep-alive, chunked bodies, upgrades) as llhttp does, refuses the same
smuggling attempts, and reads what it reads on purpose (an extension method from a client,
`chunked` with whitespace after it from an upstream), where llhttp refuses."""

import httpx
import pytest
from trio_websocket import open_websocket_url

from tests.config_builder import ConfigBuilder, proxy_config
from tests.e2e.test_bad_requests import SMUGGLING
from tests.helpers import (
    eventually,
    raw_exchange,
    run_gateway,
    start_scripted_upstream,
    start_upstream,
    url,
)
from tests.ws_echo import start_echo_server

H11 = {"http1_parser": "h11"}


def h11_config(*endpoints: int) -> ConfigBuilder:
    """The listener and the cluster both on h11."""
    return proxy_config(*endpoints, listener=H11, cluster=H11)


async def test_get_and_a_chunked_post_are_proxied(nursery):
    up = await start_upstream(nursery)

    async def body():
        for part in (b"abc", b"defg", b"h" * 5000):
            yield part

    async with run_gateway(h11_config(up.port)) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/get?q=1"), headers={"x-a": "b"})
        assert r.status_code == 200
        assert r.json()["path"] == "/get?q=1" and r.json()["headers"]["x-a"] == "b"
        assert r.headers["x-upstream"] == "upstream"
        r = await client.post(url(gw, "/post"), content=body())
        assert r.status_code == 200 and r.json()["method"] == "POST"
        assert r.json()["body_bytes"] == 5007
    assert up.requests[-1].body == b"abcdefg" + b"h" * 5000


#: Found in the body, after the head was accepted: the request fails as a stream, and the
#: connection is not counted as a protocol error (on llhttp neither).
_IN_THE_BODY = {"oversized chunk size"}


@pytest.mark.parametrize(("name", "raw"), list(SMUGGLING.items()), ids=list(SMUGGLING))
async def test_ambiguous_or_malformed_request_is_rejected(nursery, name, raw):
    up = await start_upstream(nursery)
    async with run_gateway(h11_config(up.port)) as gw:
        # A well-formed request follows on the same connection: it must never be served.
        out = await raw_exchange(
            gw.listener_ports["edge"], raw + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        errors = 0 if name in _IN_THE_BODY else 1
        await eventually(lambda: gw.stats.value("http.edge.downstream_cx_protocol_error") == errors)
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    assert out.count(b"HTTP/1.1") == 1, "the connection must close after the 400"
    assert up.requests == []


@pytest.mark.parametrize(("parser", "status"), [("h11", 200), ("llhttp", 400)])
async def test_an_extension_method_is_served_on_h11_only(nursery, parser, status):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, listener={"http1_parser": parser}, cluster=H11)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        r = await client.request("FOO", url(gw, "/resource"))
        assert r.status_code == status
    assert [r.method for r in up.requests] == (["FOO"] if parser == "h11" else [])


_TAB_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n2\r\nok\r\n0\r\n\r\n"


@pytest.mark.parametrize(("parser", "status"), [("h11", 200), ("llhttp", 502)])
async def test_the_cluster_parses_responses_with_its_own_parser(nursery, parser, status):
    # `chunked<HTAB>` is chunked (RFC 9110 5.5): h11 reads it so, llhttp would not, and the
    # codec on llhttp refuses it rather than relay the chunk framing as the body.
    port, _ = await start_scripted_upstream(nursery, _TAB_CHUNKED)
    config = proxy_config(port, listener=H11, cluster={"http1_parser": parser})
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/"))
    assert r.status_code == status
    if status == 200:
        assert r.content == b"ok"


async def test_a_websocket_upgrade_goes_through_both_sides(nursery):
    # The upgrade request ends with its head on the listener's side, the 101 on the
    # cluster's; what follows either is the tunnel's, handed over with the bytes read past.
    echo = await start_echo_server(nursery)
    config = proxy_config(echo.port, listener={**H11, "upgrade": ["websocket"]}, cluster=H11)
    async with run_gateway(config) as gw:
        port = gw.listener_ports["edge"]
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send_message("hello")
            assert await ws.get_message() == "hello"
            big = bytes(range(256)) * 1024
            await ws.send_message(big)
            assert await ws.get_message() == big
        assert gw.stats.value("http.edge.downstream_cx_upgrades_total") == 1


@pytest.mark.parametrize(("parser", "outcome"), [("h11", "success"), ("llhttp", "failure")])
async def test_http_health_checks_parse_with_the_cluster_parser(nursery, parser, outcome):
    port, _ = await start_scripted_upstream(nursery, _TAB_CHUNKED)
    check = {"type": "http", "path": "/healthz", "interval": "50ms", "timeout": "500ms"}
    config = proxy_config(port, cluster={"http1_parser": parser, "health_checks": [check]})
    async with run_gateway(config) as gw:
        await eventually(lambda: gw.stats.value(f"cluster.backend.health_check.{outcome}") >= 1)
