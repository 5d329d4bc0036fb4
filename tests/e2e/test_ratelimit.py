"""The `ratelimit` filter against a rate limit service (envoy.service.ratelimit.v3, a grpcio
server with the xds-protos servicer), through a real gateway with httpx and a grpcio
client: descriptors from every action kind, under and over the limit with Envoy's
headers, the service down or slow (fail open, fail closed, cancelled with the stream),
and routes without rate limits never asking."""

import functools

import grpc
import httpx
import pytest
import trio
from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf import duration_pb2

from tests.admin_helpers import wait_for_node
from tests.config_builder import proxy_config, route
from tests.envoy_services import over_limit, rate_limit_service, under_limit
from tests.grpc_echo import start_server
from tests.helpers import eventually, free_port, run_gateway, start_upstream, url

Response = rls_pb2.RateLimitResponse

#: A rate limit for each action kind, and one whose header may be absent.
ROUTE_LIMITS = [
    {"actions": [{"request_headers": {"header_name": "x-user", "descriptor_key": "user"}}]},
    {"actions": [{"remote_address": {}}, {"generic_key": {"descriptor_value": "api"}}]},
    {
        "actions": [
            {
                "header_value_match": {
                    "descriptor_value": "writes",
                    "headers": [{"name": "x-method", "exact": "POST"}],
                }
            },
            {"destination_cluster": {}},
            {"source_cluster": {}},
        ]
    },
    {
        "actions": [
            {
                "header_value_match": {
                    "descriptor_key": "tier",
                    "descriptor_value": "free",
                    "expect_match": False,
                    "headers": [{"name": "x-plan", "present": True}],
                }
            },
            {
                "request_headers": {
                    "header_name": "x-region",
                    "descriptor_key": "region",
                    "skip_if_absent": True,
                }
            },
        ]
    },
    {"stage": 1, "actions": [{"generic_key": {"descriptor_value": "other-stage"}}]},
]


def ratelimit_config(upstream_port: int, rls_port: int, **filter_keys):
    """Listener `edge` runs `rate` (domain "edge") against the service at `rls_port`.
    /api/ has ROUTE_LIMITS, the other routes none; on host other.example every route has
    its virtual host's."""
    rate = {
        "type": "ratelimit",
        "domain": "edge",
        "rate_limit_service": {"cluster": "rls", "timeout": "2s"},
        **filter_keys,
    }
    config = proxy_config(
        upstream_port,
        http_filters={"rate": rate},
        routes=[route("/api/", cluster="backend", rate_limits=ROUTE_LIMITS)],
    )
    config.listener("edge")["virtual_hosts"].append("other")
    config.virtual_host(
        "other",
        route(cluster="backend"),
        domains=["other.example"],
        rate_limits=[{"actions": [{"generic_key": {"descriptor_value": "vhost"}}]}],
    )
    config.table("dynamic", "node", cluster="edge-gateways")
    config.cluster("rls", rls_port, protocol="http2", connect_timeout="200ms")
    return config


def descriptors(request) -> list[list[tuple[str, str]]]:
    return [[(e.key, e.value) for e in d.entries] for d in request.descriptors]


@pytest.fixture
def rls():
    with rate_limit_service() as (service, port):
        yield service, port


async def test_descriptors_from_every_action_kind(nursery, rls):
    service, port = rls
    up = await start_upstream(nursery)
    async with run_gateway(ratelimit_config(up.port, port)) as gw, httpx.AsyncClient() as client:
        headers = {"x-user": "alice", "x-method": "POST", "x-region": "eu"}
        assert (await client.get(url(gw, "/api/a"), headers=headers)).status_code == 200
        # Without x-user its descriptor is left out; x-region may be absent; x-plan makes
        # the expect_match = false descriptor fail, so it goes too.
        headers = {"x-plan": "pro"}
        assert (await client.get(url(gw, "/api/b"), headers=headers)).status_code == 200
        other = {"host": "other.example"}
        assert (await client.get(url(gw, "/x"), headers=other)).status_code == 200  # vhost's
        assert (await client.get(url(gw, "/open"))).status_code == 200  # none: no call
    first, second, third = service.requests
    assert first.domain == "edge"
    assert descriptors(first) == [
        [("user", "alice")],
        [("remote_address", "127.0.0.1"), ("generic_key", "api")],
        [
            ("header_match", "writes"),
            ("destination_cluster", "backend"),
            ("source_cluster", "edge-gateways"),
        ],
        [("tier", "free"), ("region", "eu")],
    ]
    assert descriptors(second) == [[("remote_address", "127.0.0.1"), ("generic_key", "api")]]
    assert descriptors(third) == [[("generic_key", "vhost")]]
    assert gw.stats.value("cluster.backend.ratelimit.ok") == 3
    assert len(up.requests) == 4


async def test_under_the_limit_headers_reach_upstream_and_client(nursery, rls):
    service, port = rls
    minute = Response.RateLimit(requests_per_unit=10, unit=Response.RateLimit.MINUTE)
    hour = Response.RateLimit(requests_per_unit=100, unit=Response.RateLimit.HOUR, name="hourly")
    service.answer = lambda request: under_limit(
        statuses=[
            Response.DescriptorStatus(
                code=Response.OK,
                current_limit=hour,
                limit_remaining=40,
                duration_until_reset=duration_pb2.Duration(seconds=1800),
            ),
            Response.DescriptorStatus(
                code=Response.OK,
                current_limit=minute,
                limit_remaining=3,
                duration_until_reset=duration_pb2.Duration(seconds=42),
            ),
        ],
        request_headers_to_add=[base_pb2.HeaderValue(key="x-quota-tier", value="gold")],
        response_headers_to_add=[base_pb2.HeaderValue(key="x-quota-note", value="fine")],
    )
    up = await start_upstream(nursery)
    config = ratelimit_config(up.port, port, enable_x_ratelimit_headers="DRAFT_VERSION_03")
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/api/a"), headers={"x-user": "alice"})
        # A header the gateway owns makes the answer unusable: a failed call (fail open).
        service.answer = lambda request: under_limit(
            request_headers_to_add=[base_pb2.HeaderValue(key="content-length", value="5")]
        )
        assert (await client.get(url(gw, "/api/b"))).status_code == 200
        assert "content-length" not in up.requests[1].headers
    assert gw.stats.value("cluster.backend.ratelimit.failure_mode_allowed") == 1
    assert r.status_code == 200
    assert up.requests[0].headers["x-quota-tier"] == "gold"
    assert r.headers["x-quota-note"] == "fine"
    assert r.headers["x-ratelimit-limit"] == '10, 100;w=3600;name="hourly", 10;w=60'
    assert r.headers["x-ratelimit-remaining"] == "3"
    assert r.headers["x-ratelimit-reset"] == "42"
    assert "x-envoy-ratelimited" not in r.headers


async def test_over_the_limit_is_429_for_http_and_unavailable_for_grpc(nursery, rls):
    service, port = rls
    limit = Response.RateLimit(requests_per_unit=5, unit=Response.RateLimit.SECOND)
    service.answer = lambda request: over_limit(
        statuses=[
            Response.DescriptorStatus(
                code=Response.OVER_LIMIT,
                current_limit=limit,
                limit_remaining=0,
                duration_until_reset=duration_pb2.Duration(seconds=1),
            )
        ],
        response_headers_to_add=[base_pb2.HeaderValue(key="content-type", value="text/json")],
        raw_body=b'{"slow": "down"}',
    )
    up = await start_upstream(nursery)
    config = ratelimit_config(up.port, port, enable_x_ratelimit_headers="DRAFT_VERSION_03")
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/api/a"), headers={"x-user": "alice"})
        assert (r.status_code, r.text) == (429, '{"slow": "down"}')
        assert r.headers["x-envoy-ratelimited"] == "true"
        assert r.headers.get_list("content-type") == ["text/json"]
        assert (r.headers["x-ratelimit-limit"], r.headers["x-ratelimit-remaining"]) == (
            "5, 5;w=1",
            "0",
        )
        assert (await client.get(url(gw, "/open"))).status_code == 200
    assert [r.path for r in up.requests] == ["/open"]
    assert gw.stats.value("cluster.backend.ratelimit.over_limit") == 1

    server, echo_port, _ = start_server()
    try:
        config = ratelimit_config(echo_port, port)
        config.cluster("backend", protocol="http2")
        config.routes()[0]["match"] = {"prefix": "/test.Echo/"}
        async with run_gateway(config) as gw:
            channel = grpc.insecure_channel(f"127.0.0.1:{gw.listener_ports['edge']}")
            unary = channel.unary_unary("/test.Echo/Unary")
            call = functools.partial(unary, b"hi", timeout=5, metadata=[("x-user", "bob")])
            with pytest.raises(grpc.RpcError) as limited:
                await trio.to_thread.run_sync(call)
            assert limited.value.code() == grpc.StatusCode.UNAVAILABLE  # as Envoy maps 429
            channel.close()
        config.tables["http_filters"]["rate"]["rate_limited_as_resource_exhausted"] = True
        async with run_gateway(config) as gw:
            channel = grpc.insecure_channel(f"127.0.0.1:{gw.listener_ports['edge']}")
            unary = channel.unary_unary("/test.Echo/Unary")
            call = functools.partial(unary, b"hi", timeout=5, metadata=[("x-user", "bob")])
            with pytest.raises(grpc.RpcError) as limited:
                await trio.to_thread.run_sync(call)
            assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            channel.close()
    finally:
        server.stop(grace=None)


async def test_service_down_allows_or_with_failure_mode_deny_refuses(nursery):
    up = await start_upstream(nursery)
    config = ratelimit_config(up.port, free_port())
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/api/a"))).status_code == 200
    assert gw.stats.value("cluster.backend.ratelimit.error") == 1
    assert gw.stats.value("cluster.backend.ratelimit.failure_mode_allowed") == 1
    config = ratelimit_config(up.port, free_port(), failure_mode_deny=True)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/api/a"))
        assert r.status_code == 500
        assert (await client.get(url(gw, "/open"))).status_code == 200  # no call, no harm
    assert gw.stats.value("cluster.backend.ratelimit.error") == 1
    assert gw.stats.value("cluster.backend.ratelimit.failure_mode_allowed") == 0
    assert [r.path for r in up.requests] == ["/api/a", "/open"]


async def test_a_slow_service_is_cancelled_with_the_stream_and_times_out(nursery, rls):
    service, port = rls
    service.slow = True
    up = await start_upstream(nursery)
    config = ratelimit_config(up.port, port)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        async with trio.open_nursery() as waiting:

            async def leave_early():
                with trio.move_on_after(10), pytest.raises(httpx.ReadTimeout):
                    await client.get(url(gw, "/api/a"), timeout=httpx.Timeout(5, read=0.5))

            waiting.start_soon(leave_early)
            await trio.to_thread.run_sync(service.started.wait, 5)
            node = await wait_for_node(client, gw, kind="stream", path="/api/a")
            assert node["state"] == "waiting for rate limit service"
            with trio.fail_after(2):  # a bystander on a route without limits
                assert (await client.get(url(gw, "/open"))).status_code == 200
        assert await trio.to_thread.run_sync(service.cancelled.wait, 5)
        await eventually(lambda: gw.stats.value("http.edge.downstream_rq_active") == 0)
    assert [r.path for r in up.requests] == ["/open"]

    # The call's own timeout: the service failed, so the request passes (fail open).
    service.cancelled.clear()
    config.tables["http_filters"]["rate"]["rate_limit_service"]["timeout"] = "100ms"
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        with trio.fail_after(2):
            assert (await client.get(url(gw, "/api/a"))).status_code == 200
        assert await trio.to_thread.run_sync(service.cancelled.wait, 5)
    assert gw.stats.value("cluster.backend.ratelimit.failure_mode_allowed") == 1
