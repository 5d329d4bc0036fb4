"""Active health checks (http, tcp, grpc) against real upstreams that fail on purpose."""

import time
from concurrent import futures
from typing import Any

import grpc
import httpx
import pytest
import trio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.cluster_helpers import Backend, spread, start_backends
from tests.config_builder import ConfigBuilder, Table, proxy_config
from tests.helpers import admin_url, eventually, run_gateway, url

HTTP_CHECK = {
    "type": "http",
    "path": "/healthz",
    "interval": "50ms",
    "timeout": "500ms",
    "unhealthy_threshold": 2,
    "healthy_threshold": 2,
}


def checked_config(*endpoints: int, check: Table, **cluster: Any) -> ConfigBuilder:
    """Cluster `backend` at `endpoints`, with the health `check` and the keys in `cluster`."""
    return proxy_config(*endpoints, cluster={"health_checks": [check], **cluster})


async def test_http_health_check_takes_hosts_out_and_back(nursery):
    b = await start_backends(nursery, 2)
    b[1].healthy = False
    async with (
        run_gateway(checked_config(*(x.port for x in b), check=HTTP_CHECK)) as gw,
        httpx.AsyncClient() as client,
    ):
        # The first check ran before the gateway started serving: b1 never gets traffic.
        assert await spread(client, url(gw, "/"), 6) == {"b0": 6}
        text = (await client.get(admin_url(gw, "/clusters"))).text
        assert f"backend::127.0.0.1:{b[1].port}::health_flags::/failed_active_hc" in text
        assert f"backend::127.0.0.1:{b[0].port}::health_flags::healthy" in text
        assert gw.stats.value("cluster.backend.membership_healthy") == 1

        b[1].healthy = True
        cluster = gw.clusters.get("backend")
        await eventually(lambda: cluster.hosts[1].healthy)
        assert await spread(client, url(gw, "/"), 6) == {"b0": 3, "b1": 3}

        b[0].healthy = False
        await eventually(lambda: not cluster.hosts[0].healthy)
        assert await spread(client, url(gw, "/"), 4) == {"b1": 4}
        # Changes: b0 passes its first check, b1 recovers, b0 fails.
        assert gw.stats.value("cluster.backend.health_check.changed") == 3
        assert gw.stats.value("cluster.backend.health_check.failure") >= 3
        assert gw.stats.value("cluster.backend.health_check.success") >= 3
        body = (await client.get(admin_url(gw, "/clusters?format=json"))).json()
        statuses = [h["health_status"] for h in body["cluster_statuses"][0]["host_statuses"]]
        assert statuses[0]["failed_active_health_check"] is True
        assert "failed_active_health_check" not in statuses[1]
        # The last probe of each host, for the dashboard: when, and why it failed.
        hosts = body["cluster_statuses"][0]["host_statuses"]
        failed, passed = (h["last_health_check"] for h in hosts)
        assert failed["passed"] is False and failed["failure"].startswith("status ")
        assert passed == {"time": passed["time"], "passed": True, "failure": None}
        assert abs(passed["time"] - time.time()) < 10
        assert hosts[0]["outlier_detection"] == {"ejected": False, "ejections_total": 0}


async def test_http_check_expected_statuses_and_host_header(nursery):
    seen_hosts = []

    class Picky(Backend):
        async def __call__(self, scope, receive, send):
            if scope["type"] == "http" and scope["path"] == "/healthz":
                seen_hosts.append(dict(scope["headers"])[b"host"])
                await self._answer(send, 204, b"")
                return
            await super().__call__(scope, receive, send)

    backend = Picky("picky")
    await backend.start(nursery)
    check = {**HTTP_CHECK, "expected_statuses": [200, 204], "host": "health.internal"}
    config = checked_config(backend.port, check=check, healthy_panic_threshold=0)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/"))).status_code == 200
    assert seen_hosts[0] == b"health.internal"


async def test_all_hosts_failing_is_panic_mode_unless_disabled(nursery):
    b = await start_backends(nursery, 2)
    for x in b:
        x.healthy = False
    endpoints = [x.port for x in b]
    async with run_gateway(checked_config(*endpoints, check=HTTP_CHECK)) as gw:
        async with httpx.AsyncClient() as client:
            # Envoy's default 50% panic threshold: all hosts are used rather than none.
            assert (await client.get(url(gw, "/"))).status_code == 200
        assert gw.stats.value("cluster.backend.lb_healthy_panic") == 1
    config = checked_config(*endpoints, check=HTTP_CHECK, healthy_panic_threshold=0)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        response = await client.get(url(gw, "/"))
        assert response.status_code == 503
        assert response.text == "no healthy upstream"


async def test_tcp_health_check_with_send_and_expect(nursery):
    async def echo_pong(stream: trio.SocketStream) -> None:
        async with stream:
            if b"PING" in await stream.receive_some(100):
                await stream.send_all(b"+PONG\r\n")

    listeners = await nursery.start(trio.serve_tcp, echo_pong, 0)
    good = listeners[0].socket.getsockname()[1]
    # A port nobody listens on: the connect fails.
    closed = trio.socket.socket()
    await closed.bind(("127.0.0.1", 0))
    dead = closed.getsockname()[1]
    closed.close()
    check = {
        "type": "tcp",
        "send": "PING\r\n",
        "expect": "PONG",
        "interval": "100ms",
        "timeout": "300ms",
    }
    async with run_gateway(checked_config(good, dead, check=check)) as gw:
        hosts = gw.clusters.get("backend").hosts
        assert [h.healthy for h in hosts] == [True, False]
        assert gw.stats.value("cluster.backend.health_check.network_failure") >= 1


class _GrpcHealthServer:
    def __init__(self) -> None:
        self.servicer = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def set(self, service: str, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.servicer.set(service, status)


@pytest.fixture
def grpc_health_servers():
    servers = [_GrpcHealthServer(), _GrpcHealthServer()]
    yield servers
    for s in servers:
        s.server.stop(None)


async def test_grpc_health_check_reads_serving_status(grpc_health_servers):
    one, two = grpc_health_servers
    one.set("test.Echo", True)
    two.set("test.Echo", False)
    check = {
        "type": "grpc",
        "service_name": "test.Echo",
        "interval": "50ms",
        "timeout": "1s",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
    }
    async with run_gateway(checked_config(one.port, two.port, check=check, protocol="http2")) as gw:
        hosts = gw.clusters.get("backend").hosts
        assert [h.healthy for h in hosts] == [True, False]
        two.set("test.Echo", True)
        one.set("test.Echo", False)
        await eventually(lambda: [h.healthy for h in hosts] == [False, True])
