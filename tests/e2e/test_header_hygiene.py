"""Header values and hop-by-hop headers as a hostile client sends them: whitespace around a
value cannot slip past a matcher, and `Connection` cannot remove what the gateway adds."""

import json

import h2.events
import httpx
import pytest
import trio

from tests.config_builder import proxy_config, route
from tests.helpers import (
    RawH2Client,
    raw_exchange,
    run_gateway,
    start_upstream,
    url,
)

FILTERS = {
    "rbac": {
        "type": "rbac",
        "action": "deny",
        "rules": [{"headers": [{"name": "x-role", "exact": "guest"}]}],
    },
    "tag": {"type": "header_mutation", "request_headers_to_add": {"x-tagged": "by-filter"}},
}


@pytest.fixture
async def gw(nursery):
    up = await start_upstream(nursery)
    listener = {"virtual_hosts": ["secret", "main"]}
    config = proxy_config(up.port, listener=listener, http_filters=FILTERS)
    secret = route(direct_response={"status": 200, "body": "secret vhost"})
    config.virtual_host("secret", secret, domains=["secret.test"])
    async with run_gateway(config) as gw:
        gw.upstream = up
        yield gw


async def exchange(gw, head: bytes) -> bytes:
    return await raw_exchange(
        gw.listener_ports["edge"], head + b"Connection: close\r\n\r\n", read_timeout=3
    )


@pytest.mark.parametrize("value", [b"guest ", b"guest\t", b"\tguest \t ", b" guest"])
async def test_whitespace_around_a_value_does_not_pass_a_deny(gw, value):
    out = await exchange(gw, b"GET /items HTTP/1.1\r\nHost: x\r\nX-Role: " + value + b"\r\n")
    assert out.startswith(b"HTTP/1.1 403 "), out[:100]
    async with httpx.AsyncClient() as bystander:
        r = await bystander.get(url(gw, "/items"), headers={"x-role": "owner"})
        assert r.status_code == 200
    assert [r.headers["x-role"] for r in gw.upstream.requests] == ["owner"]


async def test_whitespace_after_host_does_not_escape_its_virtual_host(gw):
    out = await exchange(gw, b"GET / HTTP/1.1\r\nHost: secret.test \r\n")
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"secret vhost"), out
    assert gw.upstream.requests == []


async def test_http2_value_with_surrounding_whitespace_is_refused(gw):
    client = await RawH2Client.connect(gw.listener_ports["edge"])
    async with client.stream:
        client.conn.config.validate_outbound_headers = False  # send what a hostile peer would
        stream_id = client.conn.get_next_available_stream_id()
        client.conn.send_headers(
            stream_id,
            [
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "x"),
                (":path", "/items"),
                ("x-role", "guest "),
            ],
            end_stream=True,
        )
        await client.flush()
        events = await client.read_until(
            lambda e: (
                isinstance(e, h2.events.StreamReset | h2.events.ConnectionTerminated)
                or (isinstance(e, h2.events.ResponseReceived) and e.stream_id == stream_id)
            )
        )
    responses = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert all(dict(e.headers)[b":status"] != b"200" for e in responses)
    assert gw.upstream.requests == []


@pytest.mark.parametrize("named", ["x-forwarded-for", "x-request-id", "x-tagged"])
async def test_connection_cannot_remove_headers_the_gateway_adds(gw, named):
    out = await exchange(
        gw,
        b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Request-Id: from-client\r\nX-Custom: v\r\n"
        b"Connection: keep-alive, x-custom, " + named.encode() + b"\r\n",
    )
    assert out.startswith(b"HTTP/1.1 200 "), out[:100]
    seen = json.loads(out.partition(b"\r\n\r\n")[2])["headers"]
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["x-tagged"] == "by-filter"
    assert seen["x-request-id"]  # the client's was hop-by-hop by its own say; one was made
    assert "x-custom" not in seen  # what Connection names is still not forwarded
    assert "connection" not in seen or seen["connection"] != "x-custom"


async def test_bystander_keeps_working_while_values_are_hostile(gw):
    async def attacker() -> None:
        for _ in range(20):
            await exchange(gw, b"GET /items HTTP/1.1\r\nHost: secret.test \r\nX-Role: guest \r\n")

    async with trio.open_nursery() as nursery, httpx.AsyncClient() as bystander:
        nursery.start_soon(attacker)
        for _ in range(20):
            r = await bystander.get(url(gw, "/ok"))
            assert r.status_code == 200
