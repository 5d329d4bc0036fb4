"""The grpc_stats filter: a grpcio client -> the gateway -> a grpcio server, and the
per-method counts in /stats (text, JSON and Prometheus): calls, statuses, messages each way,
calls outside the allowlist, local replies, and the bound on methods under random names."""

import functools

import grpc
import httpx
import trio

from tests.config_builder import ConfigBuilder, route
from tests.grpc_echo import OPTIONS
from tests.helpers import admin_url, eventually, run_gateway


def stats_config(port: int, **grpc_stats: object) -> ConfigBuilder:
    """Listener `edge` runs `grpc_stats` (with `grpc_stats` keys), then a `fault` filter
    answering what `x-envoy-fault-abort-request` asks; `/down.Service/` goes to cluster
    `nowhere` (no hosts), everything else to the echo server at `port`."""
    config = ConfigBuilder()
    config.listener("edge", virtual_hosts=["grpc"], http_filters=["grpc", "chaos"])
    config.http_filter("grpc", "grpc_stats", **grpc_stats)
    config.http_filter("chaos", "fault", header_control=True)
    config.virtual_host(
        "grpc",
        route("/down.Service/", cluster="nowhere"),
        route(cluster="echo"),
    )
    config.cluster("echo", port, protocol="http2")
    config.cluster("nowhere", protocol="http2")
    return config


async def blocking(fn, *args, **kwargs):
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


def call(channel: grpc.Channel, path: str, request: bytes, **kwargs) -> grpc.StatusCode:
    """A unary call's status code (its response is not needed here)."""
    try:
        channel.unary_unary(path)(request, timeout=5, **kwargs)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def grpc_stats(gw) -> dict[str, int]:
    """Every `cluster.*.grpc.*` counter that moved."""
    return {
        s.name: s.value
        for s in gw.stats.select(used_only=True)
        if ".grpc." in s.name and hasattr(s, "value")
    }


async def test_calls_statuses_and_messages_per_method(echo_server):
    echo_port, _ = echo_server
    allowlist = {"services": [{"name": "test.Echo", "method_names": ["Unary", "ServerStream"]}]}
    config = stats_config(
        echo_port, individual_method_stats_allowlist=allowlist, enable_upstream_stats=True
    )
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        channel = grpc.insecure_channel(f"127.0.0.1:{gw.listener_ports['edge']}", options=OPTIONS)
        with channel:
            ok = grpc.StatusCode.OK
            assert await blocking(call, channel, "/test.Echo/Unary", b"a") == ok
            assert await blocking(call, channel, "/test.Echo/Unary", b"b") == ok
            invalid = grpc.StatusCode.INVALID_ARGUMENT
            assert await blocking(call, channel, "/test.Echo/Unary", b"fail") == invalid
            streamed = await blocking(
                lambda: list(channel.unary_stream("/test.Echo/ServerStream")(b"5", timeout=5))
            )
            assert len(streamed) == 5
            # Outside the allowlist: counted without service and method.
            sent = [b"x" * n for n in (0, 1, 70_000)]  # an empty message; one over 64 KiB
            assert (
                await blocking(
                    channel.stream_unary("/test.Echo/ClientStream"), iter(sent), timeout=5
                )
                == b"3:70001"
            )
            received = await blocking(
                lambda: list(channel.stream_stream("/test.Echo/Bidi")(iter(sent), timeout=5))
            )
            assert len(received) == 3
            unimplemented = grpc.StatusCode.UNIMPLEMENTED
            assert await blocking(call, channel, "/test.Echo/Missing", b"x") == unimplemented
            # Made by the gateway: no host (UNAVAILABLE), and a later filter's local reply
            # (503: UNAVAILABLE too); each counts in its route's cluster.
            unavailable = grpc.StatusCode.UNAVAILABLE
            assert await blocking(call, channel, "/down.Service/Call", b"x") == unavailable
            abort = (("x-envoy-fault-abort-request", "503"),)
            assert (
                await blocking(call, channel, "/test.Echo/Unary", b"c", metadata=abort)
                == unavailable
            )
            # Not gRPC, though its path has the shape: not counted (below).
            await client.post(f"http://127.0.0.1:{gw.listener_ports['edge']}/a/b", content=b"x")

            unary = "cluster.echo.grpc.test.Echo.Unary"
            await eventually(lambda: gw.stats.value(f"{unary}.total") == 4)
            await eventually(lambda: gw.stats.value("cluster.echo.grpc.total") == 3)
            await eventually(lambda: gw.stats.value("cluster.nowhere.grpc.total") == 1)

            assert grpc_stats(gw) == {
                f"{unary}.success": 2,
                f"{unary}.failure": 2,
                f"{unary}.total": 4,
                f"{unary}.0": 2,
                f"{unary}.3": 1,
                f"{unary}.14": 1,
                # The fault filter's reply never saw the request's message go up.
                f"{unary}.request_message_count": 3,
                f"{unary}.response_message_count": 2,
                "cluster.echo.grpc.test.Echo.ServerStream.success": 1,
                "cluster.echo.grpc.test.Echo.ServerStream.total": 1,
                "cluster.echo.grpc.test.Echo.ServerStream.0": 1,
                "cluster.echo.grpc.test.Echo.ServerStream.request_message_count": 1,
                "cluster.echo.grpc.test.Echo.ServerStream.response_message_count": 5,
                # ClientStream, Bidi and Missing, in one set
                "cluster.echo.grpc.success": 2,
                "cluster.echo.grpc.failure": 1,
                "cluster.echo.grpc.total": 3,
                "cluster.echo.grpc.0": 2,
                "cluster.echo.grpc.12": 1,
                "cluster.echo.grpc.request_message_count": 7,
                "cluster.echo.grpc.response_message_count": 4,
                "cluster.nowhere.grpc.failure": 1,
                "cluster.nowhere.grpc.total": 1,
                "cluster.nowhere.grpc.14": 1,
            }
            # Only calls whose trailers came from the upstream have an upstream time.
            timed = gw.stats.histogram(f"{unary}.upstream_rq_time")
            assert timed is not None and timed.count == 2

            prometheus = (await client.get(admin_url(gw, "/stats/prometheus"))).text
            labels = (
                'envoy_cluster_name="echo",envoy_grpc_bridge_service="test.Echo",'
                'envoy_grpc_bridge_method="Unary"'
            )
            assert f"envoy_cluster_grpc_success{{{labels}}} 2\n" in prometheus
            assert f"envoy_cluster_grpc_3{{{labels}}} 1\n" in prometheus
            assert 'envoy_cluster_grpc_total{envoy_cluster_name="echo"} 3\n' in prometheus
            assert prometheus.count("# TYPE envoy_cluster_grpc_total counter") == 1
            assert f"envoy_cluster_grpc_upstream_rq_time_count{{{labels}}} 2\n" in prometheus
            text = (await client.get(admin_url(gw, "/stats?filter=grpc"))).text
            assert f"{unary}.total: 4\n" in text
            data = (await client.get(admin_url(gw, "/stats?format=json&filter=grpc"))).json()
            assert {"name": f"{unary}.0", "value": 2} in data["stats"]


async def test_without_an_allowlist_every_call_counts_in_the_cluster(echo_server):
    echo_port, _ = echo_server
    """Envoy's default: no method has stats of its own."""
    async with run_gateway(stats_config(echo_port)) as gw:
        channel = grpc.insecure_channel(f"127.0.0.1:{gw.listener_ports['edge']}", options=OPTIONS)
        with channel:
            for request in (b"a", b"fail"):
                await blocking(call, channel, "/test.Echo/Unary", request)
            await eventually(lambda: gw.stats.value("cluster.echo.grpc.total") == 2)
    assert grpc_stats(gw) == {
        "cluster.echo.grpc.success": 1,
        "cluster.echo.grpc.failure": 1,
        "cluster.echo.grpc.total": 2,
        "cluster.echo.grpc.0": 1,
        "cluster.echo.grpc.3": 1,
        "cluster.echo.grpc.request_message_count": 2,
        "cluster.echo.grpc.response_message_count": 1,
    }


async def test_random_method_names_stop_at_max_methods_while_a_bystander_is_counted(echo_server):
    echo_port, _ = echo_server
    """A client calling made-up methods gets its first few their own stats, then the
    rest are counted in the cluster's: the store stops growing, and a steady caller of a
    real method keeps its exact counts."""
    config = stats_config(echo_port, stats_for_all_methods=True, max_methods=3)
    async with run_gateway(config) as gw:
        target = f"127.0.0.1:{gw.listener_ports['edge']}"
        bystander = grpc.insecure_channel(target, options=OPTIONS)
        hostile = grpc.insecure_channel(target, options=OPTIONS)
        with bystander, hostile:
            assert await blocking(call, bystander, "/test.Echo/Unary", b"first") == (
                grpc.StatusCode.OK
            )
            done = trio.Event()
            bystander_calls = 1

            async def steady() -> None:
                nonlocal bystander_calls
                while not done.is_set():
                    status = await blocking(call, bystander, "/test.Echo/Unary", b"steady")
                    assert status == grpc.StatusCode.OK
                    bystander_calls += 1

            def attack() -> None:
                # First a name no protobuf service has: no stats of its own, even with room.
                paths = ["/random0.Service/" + "M" * 201]
                paths += [f"/random{i}.Service/Method{i}" for i in range(1, 60)]
                for path in paths:
                    status = call(hostile, path, b"x")
                    assert status == grpc.StatusCode.UNIMPLEMENTED

            async with trio.open_nursery() as nursery:
                nursery.start_soon(steady)
                await blocking(attack)
                done.set()
            unary = "cluster.echo.grpc.test.Echo.Unary"
            await eventually(lambda: gw.stats.value(f"{unary}.total") == bystander_calls)
            await eventually(lambda: gw.stats.value("cluster.echo.grpc.total") == 58)

        tracked = {
            name.rsplit(".", 1)[0]
            for name in (s.name for s in gw.stats)
            if name.startswith("cluster.echo.grpc.") and name.endswith(".total")
        }
        assert tracked == {
            unary,
            "cluster.echo.grpc.random1.Service.Method1",
            "cluster.echo.grpc.random2.Service.Method2",
            "cluster.echo.grpc",
        }
        assert gw.stats.value(f"{unary}.success") == bystander_calls > 1
        assert gw.stats.value("cluster.echo.grpc.12") == 58
        assert gw.stats.value("http.edge.grpc.method_stats_overflow") == 58
