"""gRPC through the gateway: grpcio client -> gateway -> grpcio server, all four kinds,
large messages, trailers, deadlines, cancellation, and gateway-made gRPC errors."""

import contextlib
import functools

import grpc
import pytest
import trio

from tests.config_builder import ConfigBuilder, route
from tests.grpc_echo import OPTIONS, start_server
from tests.helpers import run_gateway


def grpc_config(port: int) -> ConfigBuilder:
    """gRPC routes to cluster `echo` (the echo server at `port`) with route timeouts and
    grpc-timeout caps, a redirect, a cluster without hosts, and a non-gRPC look-alike."""
    echo = {"prefix": "/test.Echo/", "grpc": True}
    config = ConfigBuilder(admin=False)
    config.listener(virtual_hosts=["main"])
    config.virtual_host(
        "main",
        route(
            match={**echo, "headers": [{"name": "x-short", "present": True}]},
            cluster="echo",
            timeout="200ms",
        ),
        route(match=echo, cluster="echo", max_grpc_timeout="5s"),
        route(
            match={"prefix": "/moved.Service/", "grpc": True},
            redirect={"path_redirect": "/elsewhere"},
        ),
        route(match={"prefix": "/down.Service/", "grpc": True}, cluster="nowhere"),
        route("/test.Echo/", direct_response={"status": 200, "body": "not grpc"}),
    )
    config.cluster("echo", port, protocol="http2")
    config.cluster("nowhere", protocol="http2")
    return config


@pytest.fixture
async def channel(echo_server):
    port, servicer = echo_server
    async with run_gateway(grpc_config(port)) as gw:
        ch = grpc.insecure_channel(f"127.0.0.1:{gw.listener_ports['edge']}", options=OPTIONS)
        yield ch, servicer, gw
        ch.close()


async def blocking(fn, *args, **kwargs):
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


async def test_unary_with_trailing_metadata(channel):
    ch, _, gw = channel
    unary = ch.unary_unary("/test.Echo/Unary")
    response, call = await blocking(unary.with_call, b"hello", timeout=5)
    assert response == b"hello"
    assert ("x-served-by", "echo") in call.trailing_metadata()
    assert call.code() == grpc.StatusCode.OK
    assert gw.stats.value("http.edge.downstream_cx_http2_total") == 1


async def test_large_messages(channel):
    ch, _, _ = channel
    unary = ch.unary_unary("/test.Echo/Unary")
    big = bytes(range(256)) * (4 * 1024 * 1024 // 256)
    assert await blocking(unary, big, timeout=10) == big


async def test_server_streaming_1000_messages(channel):
    ch, _, _ = channel
    stream = ch.unary_stream("/test.Echo/ServerStream")
    messages = await blocking(lambda: list(stream(b"1000", timeout=10)))
    assert messages == [str(i).encode() for i in range(1000)]


async def test_client_streaming_1000_messages(channel):
    ch, _, _ = channel
    client_stream = ch.stream_unary("/test.Echo/ClientStream")
    result = await blocking(client_stream, iter([b"x" * 100] * 1000), timeout=10)
    assert result == b"1000:100000"


async def test_bidirectional_streaming(channel):
    ch, _, _ = channel
    bidi = ch.stream_stream("/test.Echo/Bidi")
    sent = [f"message-{i}".encode() for i in range(1000)]
    received = await blocking(lambda: list(bidi(iter(sent), timeout=10)))
    assert received == [m[::-1] for m in sent]


async def test_error_status_details_and_trailers_pass_through(channel):
    ch, _, _ = channel
    unary = ch.unary_unary("/test.Echo/Unary")
    with pytest.raises(grpc.RpcError) as info:
        await blocking(unary, b"fail", timeout=5)
    error = info.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "bad input"
    assert ("x-detail", "why-it-failed") in error.trailing_metadata()


async def test_deadline_is_forwarded_and_enforced(channel):
    ch, servicer, _ = channel
    unary = ch.unary_unary("/test.Echo/Unary")
    await blocking(unary, b"hi", timeout=3)
    # Forwarded, less what was spent on the way (generous: the machine may be busy). The
    # ceiling has a little slack: grpcio's client rounds the grpc-timeout it sends *up*
    # (3 s may leave as a few ms more), and the gateway forwards what it was sent, less
    # the time spent, rounded down.
    assert servicer.time_remaining is not None and 1 < servicer.time_remaining <= 3.05
    with pytest.raises(grpc.RpcError) as info:
        await blocking(unary, b"sleep", timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert await blocking(servicer.cancelled.wait, 2), "the upstream call was cancelled"


async def test_route_timeout_is_deadline_exceeded_from_the_gateway(channel):
    ch, servicer, gw = channel
    unary = ch.unary_unary("/test.Echo/Unary")
    with pytest.raises(grpc.RpcError) as info:
        await blocking(unary, b"sleep", timeout=5, metadata=(("x-short", "1"),))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert info.value.details() == "upstream request timeout"
    # The reset reaches the upstream at once; a loaded CI machine may take a while to
    # run grpcio's servicer thread (it gives up by itself after 10 s).
    assert await blocking(servicer.cancelled.wait, 5)
    assert gw.stats.value("cluster.echo.upstream_rq_timeout") == 1


async def test_route_timeout_on_a_stream_that_began_ends_with_deadline_exceeded(channel):
    """Once messages have flowed, a timeout ends the stream with trailers, not a reset
    (which the client would read as its own CANCELLED)."""
    ch, _, _ = channel
    call = ch.unary_stream("/test.Echo/ServerStream")(b"slow", metadata=(("x-short", "1"),))
    received = []
    with pytest.raises(grpc.RpcError) as info:
        await blocking(lambda: received.extend(call))
    assert received[:2] == [b"0", b"1"]
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert info.value.details() == "upstream request timeout"


async def test_upstream_gone_mid_stream_is_unavailable():
    server, port, servicer = start_server()
    async with run_gateway(grpc_config(port)) as gw:
        ch = grpc.insecure_channel(f"127.0.0.1:{gw.listener_ports['edge']}", options=OPTIONS)
        call = ch.unary_stream("/test.Echo/ServerStream")(b"slow", timeout=10)
        received = []

        def consume() -> None:
            with contextlib.suppress(grpc.RpcError):
                received.extend(call)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(blocking, consume)
            assert await blocking(servicer.started.wait, 5)
            await trio.sleep(0.2)
            server.stop(grace=None)  # the upstream goes away mid-stream
        ch.close()
    assert received[:2] == [b"0", b"1"]
    assert call.code() == grpc.StatusCode.UNAVAILABLE, call.details()


async def test_client_cancel_resets_upstream(channel):
    ch, servicer, _ = channel
    unary = ch.unary_unary("/test.Echo/Unary")
    future = unary.future(b"sleep", timeout=10)
    assert await blocking(servicer.started.wait, 5)
    future.cancel()
    assert await blocking(servicer.cancelled.wait, 2), "the servicer saw the cancellation"


async def test_gateway_errors_are_grpc_statuses(channel):
    ch, _, _ = channel
    with pytest.raises(grpc.RpcError) as info:
        await blocking(ch.unary_unary("/down.Service/Call"), b"x", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == "no healthy upstream"
    with pytest.raises(grpc.RpcError) as info:
        await blocking(ch.unary_unary("/nothing.Here/Call"), b"x", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as info:
        await blocking(ch.unary_unary("/moved.Service/Call"), b"x", timeout=5)
    assert info.value.code() == grpc.StatusCode.UNKNOWN, "a redirect is no success for gRPC"


async def test_grpc_match_leaves_plain_http_alone(channel):
    import httpx

    _, _, gw = channel
    async with httpx.AsyncClient() as client:
        r = await client.post(f"http://127.0.0.1:{gw.listener_ports['edge']}/test.Echo/Unary")
    assert r.text == "not grpc"


async def test_concurrent_unary_calls_all_succeed(channel, caplog):
    """Many calls in flight on one client connection and one upstream connection: every
    call succeeds, and no stream's failure or cancellation disturbs another's frames."""
    ch, _, gw = channel
    unary = ch.unary_unary("/test.Echo/Unary")

    def calls(worker: int) -> list[bytes]:
        return [unary(f"{worker}-{i}".encode(), timeout=10) for i in range(150)]

    results: dict[int, list[bytes]] = {}

    async def worker(n: int) -> None:
        results[n] = await blocking(calls, n)

    async with trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(worker, n)
    for n in range(8):
        assert results[n] == [f"{n}-{i}".encode() for i in range(150)]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert gw.stats.value("cluster.echo.upstream_rq_5xx") == 0
