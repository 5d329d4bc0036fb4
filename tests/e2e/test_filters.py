"""The HTTP filter interface, exercised by filters registered the way built-ins are."""

import resource

import attrs
import httpx
import pytest

from gateway.http.filter import HttpFilter, HttpFilterType, LocalReply
from gateway.http.filters import FILTER_TYPES
from gateway.http.headers import RequestHead, ResponseHead
from tests.helpers import config_toml, run_gateway, start_upstream, url


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
        FILTER_TYPES, "guard", HttpFilterType("guard", GuardConfig, lambda c: lambda i: Guard(c))
    )

    @attrs.frozen
    class Empty:
        pass

    monkeypatch.setitem(
        FILTER_TYPES, "shout", HttpFilterType("shout", Empty, lambda c: lambda i: Shout())
    )


FILTERS = """
[http_filters.guard]
type = "guard"
header = "x-token"
[http_filters.shout]
type = "shout"
"""


async def test_local_reply_stops_the_chain(nursery, test_filters):
    up = await start_upstream(nursery)
    toml = config_toml(up.port, listener='http_filters = ["guard", "shout"]') + FILTERS
    async with run_gateway(toml) as gw, httpx.AsyncClient() as client:
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
    async with run_gateway(config_toml(up.port)) as gw, httpx.AsyncClient() as client:
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
