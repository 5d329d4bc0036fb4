"""ext_authz against a gRPC authorization service (envoy.service.auth.v3.Authorization,
a grpcio server with the xds-protos servicer), through a real gateway with httpx and a
grpcio client: allow with header edits, denials passed through, the service down, slow
(timing out, and cancelled with the stream), fail open, and a bystander."""

import functools
import time

import grpc
import httpx
import pytest
import trio
from envoy.config.core.v3 import base_pb2
from envoy.type.v3 import http_status_pb2

from tests.admin_helpers import wait_for_node
from tests.config_builder import proxy_config, route
from tests.envoy_services import allow, authorization_service, deny
from tests.grpc_echo import start_server
from tests.helpers import eventually, free_port, run_gateway, start_upstream, url

Option = base_pb2.HeaderValueOption


def header(name: str, value: str, **keys) -> Option:
    return Option(header=base_pb2.HeaderValue(key=name, value=value), **keys)


def authz_config(upstream_port: int, authz_port: int, **filter_keys):
    """Listener `edge` runs ext_authz `authz` against the gRPC service at `authz_port`;
    /public/ goes without it (the bystander's route)."""
    authz = {
        "type": "ext_authz",
        "grpc_service": {"cluster": "authz", "timeout": "2s"},
        "context_extensions": {"tenant": "acme"},
        **filter_keys,
    }
    config = proxy_config(
        upstream_port,
        http_filters={"authz": authz},
        routes=[route("/public/", cluster="backend", http_filters={"authz": {"disabled": True}})],
    )
    config.cluster("authz", authz_port, protocol="http2", connect_timeout="200ms")
    return config


@pytest.fixture
def authz():
    with authorization_service() as (service, port):
        yield service, port


async def test_allow_edits_the_request_and_the_response_and_shows_envoys_attributes(nursery, authz):
    service, port = authz
    service.answer = lambda request: allow(
        headers=[
            header("x-auth-user", "alice", append_action=Option.OVERWRITE_IF_EXISTS_OR_ADD),
            header("x-extra", "one"),  # APPEND_IF_EXISTS_OR_ADD: another line
            header("x-tag", "b", append={"value": True}),  # the deprecated append: joined
            header("x-only-new", "no", append_action=Option.ADD_IF_ABSENT),
            header("x-absent", "no", append_action=Option.OVERWRITE_IF_EXISTS),
        ],
        headers_to_remove=["x-secret"],
        response_headers_to_add=[header("x-auth-trace", "t-1")],
    )
    up = await start_upstream(nursery)
    async with run_gateway(authz_config(up.port, port)) as gw, httpx.AsyncClient() as client:
        r = await client.get(
            url(gw, "/orders?id=7"),
            headers={
                "authorization": "Bearer ok",
                "x-auth-user": "mallory",
                "x-extra": "zero",
                "x-tag": "a",
                "x-only-new": "kept",
                "x-secret": "s3cret",
            },
        )
        assert r.status_code == 200
        assert r.headers["x-auth-trace"] == "t-1"
        seen = up.requests[0].headers
        assert seen["x-auth-user"] == "alice"
        assert "x-secret" not in seen
        assert seen["x-tag"] == "a,b"
        assert seen["x-only-new"] == "kept"
        assert "x-absent" not in seen
        assert seen["x-extra"] == "one"  # added after the client's "zero" (the echo keeps the last)
        listener_port = gw.listener_ports["edge"]

    (check,) = service.requests
    attributes = check.attributes
    http = attributes.request.http
    assert (http.method, http.path, http.scheme, http.protocol) == (
        "GET",
        "/orders?id=7",
        "http",
        "HTTP/1.1",
    )
    assert http.host == f"127.0.0.1:{listener_port}"
    assert http.id == seen["x-request-id"]
    assert http.size == 0  # no body is sent (nor received before the check)
    assert http.headers[":method"] == "GET" and http.headers[":path"] == "/orders?id=7"
    assert http.headers["authorization"] == "Bearer ok"
    assert http.headers["x-secret"] == "s3cret"  # the service sees the request as it came
    assert attributes.source.address.socket_address.address == "127.0.0.1"
    assert attributes.source.address.socket_address.port_value > 0
    assert attributes.destination.address.socket_address.port_value == listener_port
    assert dict(attributes.context_extensions) == {"tenant": "acme"}
    assert abs(attributes.request.time.seconds - time.time()) < 30
    assert 0 < service.time_remaining[0] <= 2  # the filter's timeout, as grpc-timeout
    assert gw.stats.value("http.edge.authz.ok") == 1


async def test_a_denial_passes_its_status_headers_and_body_to_the_client(nursery, authz):
    service, port = authz
    service.answer = lambda request: deny(
        status=http_status_pb2.HttpStatus(code=401),
        headers=[
            header("www-authenticate", 'Bearer realm="api"'),
            header("content-type", "application/json"),
            header("set-cookie", "a=1"),
            header("set-cookie", "b=2"),
        ],
        body='{"error": "who are you"}',
    )
    up = await start_upstream(nursery)
    async with run_gateway(authz_config(up.port, port)) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/orders"))
        assert (r.status_code, r.text) == (401, '{"error": "who are you"}')
        assert r.headers["www-authenticate"] == 'Bearer realm="api"'
        assert r.headers.get_list("content-type") == ["application/json"]
        assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
        # A denial without a status of its own is Envoy's 403.
        service.answer = lambda request: deny(body="no")
        assert (await client.get(url(gw, "/orders"))).status_code == 403
    assert up.requests == []
    assert gw.stats.value("http.edge.authz.denied") == 2


async def test_grpc_clients_get_denials_as_grpc_statuses(authz):
    service, port = authz
    server, echo_port, _ = start_server()
    try:
        config = authz_config(echo_port, port)
        config.cluster("backend", protocol="http2")
        async with run_gateway(config) as gw:
            channel = grpc.insecure_channel(f"127.0.0.1:{gw.listener_ports['edge']}")
            unary = channel.unary_unary("/test.Echo/Unary")
            call = functools.partial(unary.with_call, b"hi", timeout=5)
            response, _ = await trio.to_thread.run_sync(call)
            assert response == b"hi"
            assert service.requests[0].attributes.request.http.protocol == "HTTP/2"
            service.answer = lambda request: deny(
                status=http_status_pb2.HttpStatus(code=401),
                headers=[header("content-type", "text/html")],
                body="sign in first",
            )
            with pytest.raises(grpc.RpcError) as denied:
                await trio.to_thread.run_sync(call)
            assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert denied.value.details() == "sign in first"
            channel.close()
    finally:
        server.stop(grace=None)


async def test_service_down_fails_closed_or_open(nursery):
    up = await start_upstream(nursery)
    config = authz_config(up.port, free_port(), status_on_error=503)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/orders"))
        assert (r.status_code, r.text) == (503, "authorization service unavailable")
        assert (await client.get(url(gw, "/public/x"))).status_code == 200  # a bystander
    assert gw.stats.value("http.edge.authz.error") == 1
    config = authz_config(up.port, free_port(), failure_mode_allow=True)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/orders"))).status_code == 200
    assert gw.stats.value("http.edge.authz.error") == 1
    assert gw.stats.value("http.edge.authz.failure_mode_allowed") == 1


async def test_an_answer_the_gateway_cannot_use_is_a_failed_check(nursery, authz):
    service, port = authz
    up = await start_upstream(nursery)
    async with run_gateway(authz_config(up.port, port)) as gw, httpx.AsyncClient() as client:
        for bad in (header("host", "elsewhere"), header("x-a", "line\r\nbreak")):
            service.answer = functools.partial(lambda option, request: allow(headers=[option]), bad)
            assert (await client.get(url(gw, "/orders"))).status_code == 403
    assert up.requests == []
    assert gw.stats.value("http.edge.authz.error") == 2


async def test_a_slow_service_times_out_and_a_client_leaving_cancels_the_check(nursery, authz):
    service, port = authz
    service.slow = True
    up = await start_upstream(nursery)
    config = authz_config(up.port, port)
    config.tables["http_filters"]["authz"]["grpc_service"]["timeout"] = "5s"
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        async with trio.open_nursery() as waiting:

            async def leave_early():
                with trio.move_on_after(10):
                    with pytest.raises(httpx.ReadTimeout):
                        await client.get(url(gw, "/orders"), timeout=httpx.Timeout(5, read=0.5))

            waiting.start_soon(leave_early)
            await trio.to_thread.run_sync(service.started.wait, 5)
            node = await wait_for_node(client, gw, kind="stream", path="/orders")
            assert node["state"] == "waiting for ext_authz service"
            # While the check waits, a request that needs none goes through at once.
            with trio.fail_after(2):
                assert (await client.get(url(gw, "/public/x"))).status_code == 200
        # The client left: the gateway reset the call, and the service saw it cancelled.
        assert await trio.to_thread.run_sync(service.cancelled.wait, 5)
        assert up.requests[0].path == "/public/x" and len(up.requests) == 1
        await eventually(lambda: gw.stats.value("http.edge.downstream_rq_active") == 0)

    # The filter's own timeout: an error, so fail closed.
    service.started.clear()
    service.cancelled.clear()
    config.tables["http_filters"]["authz"]["grpc_service"]["timeout"] = "200ms"
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        started = trio.current_time()
        assert (await client.get(url(gw, "/orders"))).status_code == 403
        assert trio.current_time() - started < 2
        assert await trio.to_thread.run_sync(service.cancelled.wait, 5)
    assert gw.stats.value("http.edge.authz.error") == 1

    # The route's timeout bounds the check too (504, as for any filter), and the service is
    # told the nearer deadline.
    service.cancelled.clear()
    config.tables["http_filters"]["authz"]["grpc_service"]["timeout"] = "5s"
    config.routes()[-1]["timeout"] = "300ms"
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/orders"))).status_code == 504
        assert await trio.to_thread.run_sync(service.cancelled.wait, 5)
    assert service.time_remaining[-1] <= 0.3
