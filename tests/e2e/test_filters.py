"""The HTTP filter interface, exercised by filters registered the way built-ins are."""

import resource
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from gateway.http.filter import HttpFilter, HttpFilterType
from gateway.http.filters import FILTER_TYPES
from gateway.protocol.headers import LocalReply, RequestHead, ResponseHead
from tests.config_builder import proxy_config, route
from tests.helpers import run_gateway, start_upstream, url


@attrs.frozen
class GuardConfig:
    header: str


class Guard(HttpFilter):
    """Stops the chain with a local reply unless a header is present."""

    def __init__(self, config: GuardConfig) -> None:
        self.config = config

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        if self.config.header not in request.headers:
            return LocalReply(401, "missing credentials", {"www-authenticate": "Token"})
        return None


class Shout(HttpFilter):
    """Transforms both bodies chunk by chunk and marks the response head."""

    async def decode_data(self, data: bytes, end_stream: bool) -> bytes:
        return data.upper()

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        response.headers.remove("content-length")
        response.headers.set("x-shouted", "yes")

    async def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        return data.replace(b"server", b"SERVER")


@pytest.fixture
def test_filters(monkeypatch):
    monkeypatch.setitem(
        FILTER_TYPES,
        "guard",
        HttpFilterType("guard", GuardConfig, lambda c, ctx: lambda i: Guard(c)),
    )

    @attrs.frozen
    class Empty:
        pass

    monkeypatch.setitem(
        FILTER_TYPES, "shout", HttpFilterType("shout", Empty, lambda c, ctx: lambda i: Shout())
    )


FILTERS = {"guard": {"type": "guard", "header": "x-token"}, "shout": {"type": "shout"}}


async def test_local_reply_stops_the_chain(nursery, test_filters):
    up = await start_upstream(nursery)
    async with (
        run_gateway(proxy_config(up.port, http_filters=FILTERS)) as gw,
        httpx.AsyncClient() as client,
    ):
        r = await client.get(url(gw, "/"))
        assert (r.status_code, r.text) == (401, "missing credentials")
        assert r.headers["www-authenticate"] == "Token"
        assert r.headers["x-shouted"] == "yes", "local replies pass the encode filters"
        assert up.requests == []
        ok = await client.post(url(gw, "/"), headers={"x-token": "t"}, content=b"abc")
        assert ok.status_code == 200
        assert up.requests[0].body == b"ABC"
        assert b'"SERVER"' in ok.content


async def test_memory_stays_bounded_for_large_bodies(nursery):
    """200 MB up and back through the gateway (in this very process) must not grow the
    peak RSS by anything like the body size."""
    up = await start_upstream(nursery)
    size = 200 * 1024 * 1024
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        await client.get(url(gw, "/big?size=1000"))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        async def body():
            chunk = b"x" * 65536
            for _ in range(size // len(chunk)):
                yield chunk

        r = await client.post(url(gw, "/discard"), content=body())
        assert r.text == str(size)
        async with client.stream("GET", url(gw, f"/big?size={size}")) as resp:
            received = 0
            async for chunk in resp.aiter_raw():
                received += len(chunk)
        assert received == size
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert grown_mb < 40, f"peak RSS grew by {grown_mb:.0f} MB"


ROOT = Path(__file__).resolve().parents[2]

PYTHON_FILTERS = {
    "tenant": {
        "type": "python",
        "module": f"{ROOT}/examples/filters/add_tenant.py:AddTenant",
        "config": {"header": "x-tenant", "tenants": {"acme": "t-001"}},
    },
    "auth": {
        "type": "python",
        "module": f"{ROOT}/examples/filters/api_key.py:ApiKeyAuth",
        "config": {"keys": {"k-123": "billing"}, "lookup_delay": "0.01"},
    },
    "boom": {"type": "python", "module": "tests.filter_samples:Boom", "config": {"path": "/boom"}},
    "hang": {"type": "python", "module": "tests.filter_samples:Hang"},
}


def python_filters(*names: str) -> dict[str, dict]:
    """The PYTHON_FILTERS a listener runs, in this order."""
    return {name: PYTHON_FILTERS[name] for name in names}


async def test_python_example_filters(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, http_filters=python_filters("tenant", "auth"))
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        base = f"http://127.0.0.1:{gw.listener_ports['edge']}"
        r = await client.post(
            f"{base}/orders",
            content=b"12345",
            headers={"host": "acme.example.com", "x-api-key": "k-123"},
        )
        assert r.status_code == 200
        seen = r.json()["headers"]
        assert (seen["x-tenant"], seen["x-api-client"]) == ("t-001", "billing")
        assert "x-api-key" not in seen
        assert r.headers["x-tenant"] == "t-001"
        assert r.headers["x-request-body-bytes"] == "5"
        nokey = await client.get(f"{base}/orders", headers={"host": "acme.example.com"})
        assert (nokey.status_code, nokey.headers["www-authenticate"]) == (401, "ApiKey")
        stranger = await client.get(f"{base}/", headers={"host": "initech.example.com"})
        assert stranger.status_code == 404
    assert len(up.requests) == 1


async def test_python_filter_that_raises_costs_one_request(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, http_filters=python_filters("boom"))
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/boom"))
        assert (r.status_code, r.text) == (500, "http filter boom failed")
        assert (await client.get(url(gw, "/fine"))).status_code == 200
        assert gw.stats.value("http.edge.boom.errors") == 1


async def test_slow_python_filter_bounded_by_route_timeout_and_cancelled_by_client(nursery):
    from tests import filter_samples

    up = await start_upstream(nursery)
    routes = [route("/hang-in-filter/timeout", cluster="backend", timeout="200ms")]
    config = proxy_config(up.port, http_filters=python_filters("hang"), routes=routes)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/hang-in-filter/timeout"))
        assert r.status_code == 504
        filter_samples.CANCELLED = trio.Event()
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        await stream.send_all(b"GET /hang-in-filter/client HTTP/1.1\r\nHost: x\r\n\r\n")
        await trio.sleep(0.1)
        await stream.aclose()
        with trio.fail_after(1):
            await filter_samples.CANCELLED.wait()  # the filter's await was cancelled
    assert up.requests == []


def test_unimportable_python_filter_is_a_config_error():
    from gateway import ConfigError, loads_config

    unimportable = {"type": "python", "module": "no_such_module_here:Filter"}
    config = proxy_config(1, http_filters={"f": unimportable})
    with pytest.raises(ConfigError) as info:
        loads_config(config.toml())
    (error,) = info.value.errors
    assert error.startswith("http_filters.f.module: must name an HttpFilter class: cannot import")
