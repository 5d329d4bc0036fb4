"""Cancellation flows downstream -> upstream: a client that leaves closes the upstream
connection within 100 ms, and that connection never goes back to the pool."""

import time

import trio

from tests.config_builder import proxy_config
from tests.helpers import eventually, read_until, run_gateway, start_upstream


async def _assert_upstream_closed_promptly(gw, up, left_at: float) -> None:
    with trio.fail_after(2):
        await up.disconnected.wait()
    assert up.disconnects[0] - left_at < 0.1, f"took {up.disconnects[0] - left_at:.3f}s"
    pool = gw.clusters.get("backend").hosts[0].pool
    await eventually(lambda: pool.statistics().open == 0)
    assert pool.statistics().idle == 0
    assert gw.stats.value("cluster.backend.upstream_cx_destroy") == 1


async def test_client_leaving_while_waiting_for_response(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        await stream.send_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        await eventually(lambda: len(up.requests) == 1)
        await stream.aclose()
        left_at = time.monotonic()
        await _assert_upstream_closed_promptly(gw, up, left_at)
        await eventually(lambda: gw.stats.value("http.edge.downstream_cx_destroy_remote_active_rq"))


async def test_client_leaving_mid_request_body(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        await stream.send_all(
            b"POST /hang HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000
        )
        with trio.fail_after(2):
            await up.first_chunk.wait()
        await stream.aclose()
        left_at = time.monotonic()
        await _assert_upstream_closed_promptly(gw, up, left_at)


async def test_client_leaving_mid_response_body(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        await stream.send_all(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await read_until(stream, b"first\n")
        await stream.aclose()
        left_at = time.monotonic()
        await _assert_upstream_closed_promptly(gw, up, left_at)


async def test_cancellations_leave_the_pool_clean(nursery):
    """Many clients leave at different points; afterwards the pool holds nothing and the
    next request still works (the httpcore#785 failure mode)."""
    up = await start_upstream(nursery)
    toml = proxy_config(up.port, cluster={"max_connections_per_host": 2})
    async with run_gateway(toml) as gw:
        port = gw.listener_ports["edge"]

        async def leave_after(delay: float) -> None:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            await trio.sleep(delay)
            await stream.aclose()

        async with trio.open_nursery() as clients:
            for i in range(10):
                clients.start_soon(leave_after, 0.01 * i)
        pool = gw.clusters.get("backend").hosts[0].pool
        await eventually(lambda: pool.statistics().open == 0)
        stats = pool.statistics()
        assert (stats.idle, stats.waiting) == (0, 0)
        assert gw.stats.value("cluster.backend.upstream_rq_pending_active") == 0
        assert gw.stats.value("cluster.backend.upstream_rq_active") == 0
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"200 OK" in await read_until(stream, b"}")
