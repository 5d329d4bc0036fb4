"""The HTTP/1.1 connection pool against a real upstream: limits, queueing, expiry."""

import httpx
import trio

from tests.config_builder import proxy_config
from tests.helpers import (
    eventually,
    run_gateway,
    start_keepalive_upstream,
    start_upstream,
    url,
)


async def test_requests_queue_for_the_connection_limit(nursery):
    up = await start_upstream(nursery)
    toml = proxy_config(up.port, cluster={"max_connections_per_host": 2})
    async with run_gateway(toml) as gw, httpx.AsyncClient() as client:
        results = []

        async def one() -> None:
            results.append((await client.get(url(gw, "/slow?delay=0.1"))).status_code)

        async with trio.open_nursery() as n:
            for _ in range(6):
                n.start_soon(one)
        assert results == [200] * 6
        assert gw.stats.value("cluster.backend.upstream_cx_total") == 2


async def test_pool_timeout_is_503_uo(nursery):
    up = await start_upstream(nursery)
    toml = proxy_config(up.port, cluster={"max_connections_per_host": 1, "pool_timeout": "100ms"})
    async with run_gateway(toml) as gw, httpx.AsyncClient() as client:
        statuses = []

        async def one(path: str) -> None:
            statuses.append((await client.get(url(gw, path))).status_code)

        async with trio.open_nursery() as n:
            n.start_soon(one, "/slow?delay=0.5")
            await eventually(lambda: len(up.requests) == 1)
            n.start_soon(one, "/second")
        assert sorted(statuses) == [200, 503]
        assert gw.stats.value("cluster.backend.upstream_rq_pending_overflow") == 1


async def test_idle_connections_expire(nursery):
    up = await start_keepalive_upstream(nursery)
    toml = proxy_config(up.port, cluster={"idle_timeout": "200ms"})
    async with run_gateway(toml) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/"))).status_code == 200
        pool = gw.clusters.get("backend").hosts[0].pool
        assert pool.statistics().idle == 1
        await eventually(lambda: up.closed_at)  # the reaper closed it; the upstream saw it go
        assert pool.statistics().open == 0
        assert gw.stats.value("cluster.backend.upstream_cx_idle_timeout") == 1
        assert (await client.get(url(gw, "/"))).status_code == 200
        assert up.opened == 2


async def test_connection_closed_by_upstream_while_idle_is_not_reused(nursery):
    """An upstream that closes keep-alive connections (without saying Connection: close)
    must not cost the next request a 502."""
    up = await start_keepalive_upstream(nursery)
    up.close_after = 1
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/1"))).text == "ok"
        await eventually(lambda: up.closed_at)
        assert (await client.get(url(gw, "/2"))).text == "ok"
        assert up.opened == 2


async def test_non_reusable_response_discards_connection(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/"), headers={"connection": "close"})
        assert r.status_code == 200
        # Connection: close from the client is hop-by-hop: the upstream connection is kept.
        assert gw.clusters.get("backend").hosts[0].pool.statistics().idle == 1
