"""Retries: transient failures hidden from clients, unsafe work never repeated."""

import functools

import grpc
import httpx
import trio

from gateway import Gateway
from tests.cluster_helpers import start_backends
from tests.config_builder import Table, proxy_config
from tests.grpc_echo import OPTIONS, echo_config
from tests.helpers import eventually, run_gateway, url


def retries(*retry_on: str, **policy: object) -> Table:
    """Route keys: retry on `retry_on` (5xx unless given) twice, 5 ms apart; `policy` adds
    keys to the retry policy."""
    return {
        "retry_policy": {
            "retry_on": list(retry_on or ["5xx"]),
            "num_retries": 2,
            "retry_back_off": {"base_interval": "5ms"},
            **policy,
        }
    }


async def test_a_failed_get_is_retried_with_the_attempt_count(nursery):
    b = await start_backends(nursery, 1)
    b[0].fail_next = 1
    async with run_gateway(proxy_config(b[0].port, catch_all=retries())) as gw:
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
    async with (
        run_gateway(proxy_config(*(x.port for x in b), catch_all=retries())) as gw,
        httpx.AsyncClient() as client,
    ):
        for _ in range(9):
            assert (await client.get(url(gw, "/"))).status_code == 200
    # Every request that met b0 first went on to a different host, never back to b0.
    assert b[0].seen and all(s["attempt"] == "1" for s in b[0].seen)
    retried = [s for x in b[1:] for s in x.seen if s["attempt"] == "2"]
    assert len(retried) == len(b[0].seen)


async def test_retries_run_out(nursery):
    b = await start_backends(nursery, 1)
    b[0].always_fail = True
    async with run_gateway(proxy_config(b[0].port, catch_all=retries())) as gw:
        async with httpx.AsyncClient() as client:
            response = await client.get(url(gw, "/"))
        assert response.status_code == 503
        assert response.text == "failing on purpose"  # the last upstream answer
        assert len(b[0].seen) == 3
        assert gw.stats.value("cluster.backend.upstream_rq_retry_limit_exceeded") == 1


async def test_post_is_not_retried_after_the_upstream_saw_it(nursery):
    b = await start_backends(nursery, 1)
    b[0].fail_next = 1
    async with (
        run_gateway(proxy_config(b[0].port, catch_all=retries())) as gw,
        httpx.AsyncClient() as client,
    ):
        response = await client.post(url(gw, "/"), content=b"charge the card")
    assert response.status_code == 503
    assert len(b[0].seen) == 1


async def test_post_is_retried_on_connect_failure(nursery):
    b = await start_backends(nursery, 2)
    b[0].kill()
    config = proxy_config(*(x.port for x in b), catch_all=retries("connect-failure"))
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        for _ in range(4):
            response = await client.post(url(gw, "/"), content=b"x" * 1000)
            assert response.status_code == 200
            assert response.json() == {"server": "b1", "body_bytes": 1000, "path": "/"}


async def test_retry_non_idempotent_replays_the_body(nursery):
    b = await start_backends(nursery, 1)
    b[0].fail_next = 1
    config = proxy_config(b[0].port, catch_all=retries(retry_non_idempotent=True))

    async def body():
        for _ in range(10):
            yield b"y" * 10_000

    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        response = await client.post(url(gw, "/"), content=body())
    assert response.status_code == 200
    assert [s["body"] for s in b[0].seen] == [100_000, 100_000]


async def test_a_body_beyond_the_buffer_limit_is_not_retried(nursery):
    b = await start_backends(nursery, 1)
    b[0].fail_next = 1
    route = {**retries(retry_non_idempotent=True), "per_request_buffer_limit_bytes": 1000}
    async with (
        run_gateway(proxy_config(b[0].port, catch_all=route)) as gw,
        httpx.AsyncClient() as client,
    ):
        response = await client.put(url(gw, "/"), content=b"z" * 5000)
    assert response.status_code == 503
    assert len(b[0].seen) == 1


async def test_per_try_timeout_moves_on_and_cancels_the_slow_try(nursery):
    b = await start_backends(nursery, 2)
    b[0].hang = True
    config = proxy_config(*(x.port for x in b), catch_all=retries(per_try_timeout="200ms"))
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
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
    route = {"timeout": "400ms", **retries(per_try_timeout="150ms")}
    async with (
        run_gateway(proxy_config(*(x.port for x in b), catch_all=route)) as gw,
        httpx.AsyncClient() as client,
    ):
        started = trio.current_time()
        response = await client.get(url(gw, "/"))
        elapsed = trio.current_time() - started
    assert response.status_code == 504
    assert 0.35 < elapsed < 1.0


async def test_retry_breaker_overflow(nursery):
    b = await start_backends(nursery, 1)
    b[0].fail_next = 1
    breakers = {"circuit_breakers": {"max_retries": 0}}
    async with (
        run_gateway(proxy_config(b[0].port, catch_all=retries(), cluster=breakers)) as gw,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(url(gw, "/"))).status_code == 503
        assert gw.stats.value("cluster.backend.upstream_rq_retry_overflow") == 1


async def call_unary(gw: Gateway, request: bytes) -> bytes:
    """One unary call of the echo service through the gateway's edge listener (grpcio)."""
    channel = grpc.insecure_channel(f"127.0.0.1:{gw.listener_ports['edge']}", options=OPTIONS)
    try:
        unary = channel.unary_unary("/test.Echo/Unary")
        reply: bytes = await trio.to_thread.run_sync(functools.partial(unary, request, timeout=5))
        return reply
    finally:
        channel.close()


async def test_grpc_unavailable_is_retried(echo_server):
    port, servicer = echo_server
    retry_unavailable = {"retry_on": ["unavailable"], "num_retries": 1}
    async with run_gateway(echo_config(port, retry_policy=retry_unavailable)) as gw:
        assert await call_unary(gw, b"flaky") == b"flaky"
        assert servicer.flaky_calls == 2
        assert gw.stats.value("cluster.echo.upstream_rq_retry") == 1


async def test_a_grpc_call_answered_ok_is_not_repeated_on_a_route_retrying_http_failures(
    echo_server,
):
    # retry_on names only HTTP conditions: an answer whose head has no grpc-status (a
    # call answered with trailers) matched none of them, and used to be taken for a gRPC
    # condition it did not have: each call went upstream three times.
    port, servicer = echo_server
    policy = {"retry_on": ["5xx", "reset", "connect-failure"], "num_retries": 2}
    async with run_gateway(echo_config(port, retry_policy=policy)) as gw:
        assert await call_unary(gw, b"once") == b"once"
        assert servicer.unary_calls == 1
        assert gw.stats.value("cluster.echo.upstream_rq_retry") == 0
