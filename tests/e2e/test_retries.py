"""Retries: transient failures hidden from clients, unsafe work never repeated."""

import functools

import grpc
import httpx
import pytest
import trio

from tests.cluster_helpers import cluster_toml, local, start_backends
from tests.grpc_echo import OPTIONS, start_server
from tests.helpers import eventually, run_gateway, url


def retry_route(retry_on: str = '["5xx"]', more: str = "") -> str:
    return f"""
[virtual_hosts.main.routes.retry_policy]
retry_on = {retry_on}
num_retries = 2
retry_back_off = {{ base_interval = "5ms" }}
{more}
"""


async def test_a_failed_get_is_retried_with_the_attempt_count(nursery):
    b = await start_backends(nursery, 1)
    b[0].fail_next = 1
    async with run_gateway(cluster_toml([local(b[0].port)], route=retry_route())) as gw:
        async with httpx.AsyncClient() as client:
            response = await client.get(url(gw, "/"))
        assert response.status_code == 200
        assert [s["attempt"] for s in b[0].seen] == ["1", "2"]
        assert gw.stats.value("cluster.backend.upstream_rq_retry") == 1
        assert gw.stats.value("cluster.backend.upstream_rq_retry_success") == 1
        assert gw.stats.value("cluster.backend.upstream_rq_retry_backoff_exponential") == 1
        assert gw.stats.value("cluster.backend.upstream_rq_5xx") == 1


async def test_a_retry_goes_to_another_host(nursery):
    b = await start_backends(nursery, 3)
    b[0].always_fail = True
    toml = cluster_toml([local(x.port) for x in b], route=retry_route())
    async with run_gateway(toml) as gw, httpx.AsyncClient() as client:
        for _ in range(9):
            assert (await client.get(url(gw, "/"))).status_code == 200
    # Every request that met b0 first went on to a different host, never back to b0.
    assert b[0].seen and all(s["attempt"] == "1" for s in b[0].seen)
    retried = [s for x in b[1:] for s in x.seen if s["attempt"] == "2"]
    assert len(retried) == len(b[0].seen)


async def test_retries_run_out(nursery):
    b = await start_backends(nursery, 1)
    b[0].always_fail = True
    async with run_gateway(cluster_toml([local(b[0].port)], route=retry_route())) as gw:
        async with httpx.AsyncClient() as client:
            response = await client.get(url(gw, "/"))
        assert response.status_code == 503
        assert response.text == "failing on purpose"  # the last upstream answer
        assert len(b[0].seen) == 3
        assert gw.stats.value("cluster.backend.upstream_rq_retry_limit_exceeded") == 1


async def test_post_is_not_retried_after_the_upstream_saw_it(nursery):
    b = await start_backends(nursery, 1)
    b[0].fail_next = 1
    toml = cluster_toml([local(b[0].port)], route=retry_route())
    async with run_gateway(toml) as gw, httpx.AsyncClient() as client:
        response = await client.post(url(gw, "/"), content=b"charge the card")
    assert response.status_code == 503
    assert len(b[0].seen) == 1


async def test_post_is_retried_on_connect_failure(nursery):
    b = await start_backends(nursery, 2)
    b[0].kill()
    toml = cluster_toml([local(x.port) for x in b], route=retry_route('["connect-failure"]'))
    async with run_gateway(toml) as gw, httpx.AsyncClient() as client:
        for _ in range(4):
            response = await client.post(url(gw, "/"), content=b"x" * 1000)
            assert response.status_code == 200
            assert response.json() == {"server": "b1", "body_bytes": 1000, "path": "/"}


async def test_retry_non_idempotent_replays_the_body(nursery):
    b = await start_backends(nursery, 1)
    b[0].fail_next = 1
    route = retry_route(more="retry_non_idempotent = true")

    async def body():
        for _ in range(10):
            yield b"y" * 10_000

    toml = cluster_toml([local(b[0].port)], route=route)
    async with run_gateway(toml) as gw, httpx.AsyncClient() as client:
        response = await client.post(url(gw, "/"), content=body())
    assert response.status_code == 200
    assert [s["body"] for s in b[0].seen] == [100_000, 100_000]


async def test_a_body_beyond_the_buffer_limit_is_not_retried(nursery):
    b = await start_backends(nursery, 1)
    b[0].fail_next = 1
    route = retry_route(more="retry_non_idempotent = true") + ""
    route = route.replace(
        "[virtual_hosts", "per_request_buffer_limit_bytes = 1000\n[virtual_hosts", 1
    )
    toml = cluster_toml([local(b[0].port)], route=route)
    async with run_gateway(toml) as gw, httpx.AsyncClient() as client:
        response = await client.put(url(gw, "/"), content=b"z" * 5000)
    assert response.status_code == 503
    assert len(b[0].seen) == 1


async def test_per_try_timeout_moves_on_and_cancels_the_slow_try(nursery):
    b = await start_backends(nursery, 2)
    b[0].hang = True
    route = retry_route(more='per_try_timeout = "200ms"')
    toml = cluster_toml([local(x.port) for x in b], route=route)
    async with run_gateway(toml) as gw, httpx.AsyncClient() as client:
        for _ in range(3):
            response = await client.get(url(gw, "/"))
            assert response.status_code == 200
            assert response.json()["server"] == "b1"
        timeouts = gw.stats.value("cluster.backend.upstream_rq_per_try_timeout")
        assert timeouts == len(b[0].seen) >= 1
        # The abandoned try's connection was closed, not returned to the pool.
        host0 = gw.clusters.get("backend").hosts[0]
        await eventually(lambda: host0.pool.statistics().open == 0)


async def test_the_route_timeout_bounds_all_tries(nursery):
    b = await start_backends(nursery, 2)
    for x in b:
        x.hang = True
    route = 'timeout = "400ms"\n' + retry_route(more='per_try_timeout = "150ms"')
    toml = cluster_toml([local(x.port) for x in b], route=route)
    async with run_gateway(toml) as gw, httpx.AsyncClient() as client:
        started = trio.current_time()
        response = await client.get(url(gw, "/"))
        elapsed = trio.current_time() - started
    assert response.status_code == 504
    assert 0.35 < elapsed < 1.0


async def test_retry_breaker_overflow(nursery):
    b = await start_backends(nursery, 1)
    b[0].fail_next = 1
    toml = cluster_toml(
        [local(b[0].port)],
        route=retry_route(),
        extra="[clusters.backend.circuit_breakers]\nmax_retries = 0",
    )
    async with run_gateway(toml) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/"))).status_code == 503
        assert gw.stats.value("cluster.backend.upstream_rq_retry_overflow") == 1


GRPC_CONFIG = """
[admin]
address = "127.0.0.1:0"

[listeners.edge]
address = "127.0.0.1:0"
virtual_hosts = ["grpc"]

[virtual_hosts.grpc]
domains = ["*"]

[[virtual_hosts.grpc.routes]]
match = {{ prefix = "/" }}
cluster = "echo"

[virtual_hosts.grpc.routes.retry_policy]
retry_on = ["unavailable"]
num_retries = 1

[clusters.echo]
endpoints = ["127.0.0.1:{port}"]
protocol = "http2"
"""


@pytest.fixture
def echo_server():
    server, port, servicer = start_server()
    yield port, servicer
    server.stop(grace=None)


async def test_grpc_unavailable_is_retried(echo_server):
    port, servicer = echo_server
    async with run_gateway(GRPC_CONFIG.format(port=port)) as gw:
        channel = grpc.insecure_channel(f"127.0.0.1:{gw.listener_ports['edge']}", options=OPTIONS)
        unary = channel.unary_unary("/test.Echo/Unary")
        reply = await trio.to_thread.run_sync(functools.partial(unary, b"flaky", timeout=5))
        channel.close()
        assert reply == b"flaky"
        assert servicer.flaky_calls == 2
        assert gw.stats.value("cluster.echo.upstream_rq_retry") == 1
