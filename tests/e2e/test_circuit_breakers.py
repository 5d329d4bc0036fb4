"""Circuit breakers shed load at once with 503 UO; waiting requests queue in FIFO order."""

import httpx
import trio

from tests.cluster_helpers import start_backends
from tests.config_builder import proxy_config
from tests.helpers import eventually, run_gateway, start_upstream, url


async def test_max_requests_overflow_is_immediate_503_uo(nursery):
    b = await start_backends(nursery, 1)
    b[0].hang = True
    breakers = {"circuit_breakers": {"max_requests": 2}}
    async with run_gateway(proxy_config(b[0].port, cluster=breakers)) as gw:
        async with httpx.AsyncClient(timeout=5) as client, trio.open_nursery() as hangers:
            for _ in range(2):
                hangers.start_soon(client.get, url(gw, "/"))
            cluster = gw.clusters.get("backend")
            await eventually(lambda: cluster.resources.requests.count == 2)
            assert gw.stats.value("cluster.backend.circuit_breakers.default.rq_open") == 1
            started = trio.current_time()
            response = await client.get(url(gw, "/"))
            assert trio.current_time() - started < 0.5  # shed, not queued
            assert response.status_code == 503
            assert gw.stats.value("cluster.backend.upstream_rq_pending_overflow") == 1
            hangers.cancel_scope.cancel()
        await eventually(lambda: cluster.resources.requests.count == 0)
        assert gw.stats.value("cluster.backend.circuit_breakers.default.rq_open") == 0


async def test_max_pending_requests_overflow(nursery):
    up = await start_upstream(nursery)
    cluster = {"max_connections_per_host": 1, "circuit_breakers": {"max_pending_requests": 1}}
    async with (
        run_gateway(proxy_config(up.port, cluster=cluster)) as gw,
        httpx.AsyncClient(timeout=5) as client,
    ):
        statuses: list[int] = []

        async def get(path: str) -> None:
            statuses.append((await client.get(url(gw, path))).status_code)

        async with trio.open_nursery() as n:
            n.start_soon(get, "/slow?delay=0.5")  # holds the only connection
            await eventually(lambda: gw.stats.value("cluster.backend.upstream_rq_active") == 1)
            n.start_soon(get, "/slow?delay=0")  # waits: the one pending request allowed
            await eventually(
                lambda: gw.stats.value("cluster.backend.upstream_rq_pending_active") == 1
            )
            await get("/")  # over the pending limit: 503 at once
            assert statuses == [503]
        assert sorted(statuses) == [200, 200, 503]
        assert gw.stats.value("cluster.backend.upstream_rq_pending_overflow") == 1


async def test_max_connections_caps_the_cluster_across_hosts(nursery):
    ups = [await start_upstream(nursery, f"u{i}") for i in range(2)]
    cluster = {"pool_timeout": "2s", "circuit_breakers": {"max_connections": 1}}
    async with (
        run_gateway(proxy_config(*(u.port for u in ups), cluster=cluster)) as gw,
        httpx.AsyncClient(timeout=5) as client,
    ):
        async with trio.open_nursery() as n:
            for _ in range(4):
                n.start_soon(client.get, url(gw, "/slow?delay=0.05"))
        assert gw.stats.value("cluster.backend.upstream_cx_total") == 1
        assert gw.stats.value("cluster.backend.upstream_cx_overflow") >= 1


async def test_waiting_requests_are_served_first_come_first_served(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, cluster={"max_connections_per_host": 1})
    async with run_gateway(config) as gw, httpx.AsyncClient(timeout=5) as client:
        order: list[str] = []

        async def get(name: str) -> None:
            delay = 1 if name == "first" else 0  # first holds the only connection a while
            response = await client.get(url(gw, f"/slow?delay={delay}&who={name}"))
            assert response.status_code == 200
            order.append(name)

        async with trio.open_nursery() as n:
            n.start_soon(get, "first")
            await eventually(lambda: gw.stats.value("cluster.backend.upstream_rq_active") == 1)
            cancelled = trio.CancelScope()
            for i, name in enumerate(["w1", "w2", "gone", "w3", "w4"]):
                if name == "gone":

                    async def leaves() -> None:
                        with cancelled:
                            await get("gone")

                    n.start_soon(leaves)
                else:
                    n.start_soon(get, name)
                await eventually(
                    lambda i=i: (
                        gw.stats.value("cluster.backend.upstream_rq_pending_active") == i + 1
                    )
                )
            # The client that gives up leaves the queue; the others keep their places.
            cancelled.cancel()
            await eventually(
                lambda: gw.stats.value("cluster.backend.upstream_rq_pending_active") == 4
            )
        assert order == ["first", "w1", "w2", "w3", "w4"]
        served = [r.path.partition("who=")[2] for r in up.requests]
        assert served == ["first", "w1", "w2", "w3", "w4"]
