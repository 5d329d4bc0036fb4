"""Upstream TLS per cluster: SNI, CA verification on by default, client certificates,
ALPN h2 for gRPC over TLS end to end (grpcio client -> TLS -> gateway -> TLS -> grpcio)."""

import functools
import ssl
from concurrent import futures
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio

from gateway.admin.asgi import complete_lifespan
from tests.config_builder import ConfigBuilder, Table, route
from tests.grpc_echo import OPTIONS, EchoServicer
from tests.helpers import Upstream, run_gateway, url
from tests.tls_helpers import CertFiles, Pki


async def start_https_upstream(
    nursery: trio.Nursery, cert: CertFiles, client_ca: str | None = None
) -> tuple[Upstream, int]:
    upstream = Upstream("tls-upstream")
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.graceful_timeout = 0.1
    config.certfile, config.keyfile = cert.certificate_chain, cert.private_key
    if client_ca is not None:
        config.ca_certs = client_ca
        config.verify_mode = ssl.CERT_REQUIRED
    binds = await nursery.start(partial(hypercorn.trio.serve, upstream, config, mode="asgi"))
    return upstream, int(binds[0].rpartition(":")[2])


def cluster_config(port: int, tls: Table, **cluster: Any) -> ConfigBuilder:
    """Everything goes to cluster `secure` at `port`, with TLS `tls` (and the keys in
    `cluster`)."""
    config = ConfigBuilder(admin=False)
    config.listener(virtual_hosts=["main"])
    config.virtual_host("main", route(cluster="secure"))
    config.cluster("secure", port, connect_timeout="1s", tls=tls, **cluster)
    return config


async def test_https_upstream_with_sni_and_ca(pki, nursery):
    upstream, port = await start_https_upstream(nursery, pki.issue("api.internal"))
    tls = {"sni": "api.internal", "trusted_ca": pki.ca_file}
    async with run_gateway(cluster_config(port, tls)) as gw, httpx.AsyncClient() as client:
        response = await client.get(url(gw, "/hello"))
        assert gw.stats.value("cluster.secure.ssl.handshake") == 1
    assert response.status_code == 200
    assert response.json()["path"] == "/hello"
    assert upstream.requests[0].path == "/hello"


async def test_verification_is_on_by_default(pki, nursery, tmp_path):
    _, port = await start_https_upstream(nursery, pki.issue("api.internal"))
    # The system CAs do not know the test CA; another CA's bundle does not either.
    for tls in ({"sni": "api.internal"}, {"trusted_ca": Pki(tmp_path).ca_file}):
        async with run_gateway(cluster_config(port, tls)) as gw, httpx.AsyncClient() as client:
            response = await client.get(url(gw, "/"))
        assert response.status_code == 502, tls
        assert gw.stats.value("cluster.secure.upstream_cx_connect_fail") == 1
        assert gw.stats.value("cluster.secure.ssl.fail_verify_error") == 1
        assert gw.stats.value("cluster.secure.ssl.handshake") == 0
    # The right CA, but a name the certificate is not for.
    tls = {"sni": "db.internal", "trusted_ca": pki.ca_file}
    async with run_gateway(cluster_config(port, tls)) as gw, httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/"))).status_code == 502


async def test_client_certificate_for_an_upstream_that_requires_one(pki, nursery, tmp_path):
    clients = Pki(tmp_path)
    _, port = await start_https_upstream(nursery, pki.issue("api.internal"), clients.ca_file)
    base = {"sni": "api.internal", "trusted_ca": pki.ca_file}
    async with run_gateway(cluster_config(port, base)) as gw, httpx.AsyncClient() as c:
        assert (await c.get(url(gw, "/"))).status_code == 502
    cert = clients.issue("gateway.internal")
    with_cert = {**base, "certificate": cert.table()}
    async with run_gateway(cluster_config(port, with_cert)) as gw, httpx.AsyncClient() as c:
        assert (await c.get(url(gw, "/"))).status_code == 200


@pytest.fixture
def tls_echo_server(pki):
    servicer = EchoServicer()
    handler = grpc.unary_unary_rpc_method_handler(servicer.unary)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=OPTIONS,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Echo", {"Unary": handler}),)
    )
    cert = pki.issue("grpc.internal")
    key, chain = Path(cert.private_key).read_bytes(), Path(cert.certificate_chain).read_bytes()
    credentials = grpc.ssl_server_credentials([(key, chain)])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    yield port
    server.stop(grace=None)


async def test_grpc_over_tls_both_sides(pki, tls_echo_server):
    front = pki.issue("localhost")
    config = ConfigBuilder(admin=False)
    config.filter_chain(
        tls={"certificates": [front.table()]},
        filters=[{"type": "http_connection_manager", "virtual_hosts": ["main"]}],
    )
    config.virtual_host(
        "main", route(match={"prefix": "/test.Echo/", "grpc": True}, cluster="echo")
    )
    tls = {"sni": "grpc.internal", "trusted_ca": pki.ca_file}
    config.cluster("echo", tls_echo_server, protocol="http2", tls=tls)
    async with run_gateway(config) as gw:
        credentials = grpc.ssl_channel_credentials(pki.ca.cert_pem.bytes())
        channel = grpc.secure_channel(f"localhost:{gw.listener_ports['edge']}", credentials)
        try:
            call = channel.unary_unary("/test.Echo/Unary")
            reply = await trio.to_thread.run_sync(functools.partial(call, b"over tls", timeout=5))
        finally:
            channel.close()
        assert reply == b"over tls"
        assert gw.stats.value("http.edge.downstream_cx_http2_total") == 1
        assert gw.stats.value("listener.edge.ssl.handshake") == 1


async def test_http2_over_tls_to_the_upstream_says_https(pki, nursery):
    seen: list[tuple[str, str]] = []

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
            return
        seen.append((scope["http_version"], scope["scheme"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    cert = pki.issue("api.internal")
    config = hypercorn.config.Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.certfile, config.keyfile = cert.certificate_chain, cert.private_key
    binds = await nursery.start(partial(hypercorn.trio.serve, app, config, mode="asgi"))
    port = int(binds[0].rpartition(":")[2])
    tls = {"sni": "api.internal", "trusted_ca": pki.ca_file}
    async with (
        run_gateway(cluster_config(port, tls, protocol="http2")) as gw,
        httpx.AsyncClient() as client,
    ):
        assert (await client.get(url(gw, "/"))).text == "ok"
    assert seen == [("2", "https")]


async def test_health_checks_speak_the_clusters_tls(pki, nursery, tmp_path):
    """Probes go over the cluster's TLS, as requests do (docs/configuration.md, health
    checks): a TLS-only upstream passes an http check with the right CA, and fails it with
    a CA that does not know its certificate."""
    _, port = await start_https_upstream(nursery, pki.issue("api.internal"))
    check = {"type": "http", "path": "/", "interval": "10s", "timeout": "2s"}
    for ca, healthy in ((pki.ca_file, 1), (Pki(tmp_path).ca_file, 0)):
        tls = {"sni": "api.internal", "trusted_ca": ca}
        async with run_gateway(cluster_config(port, tls, health_checks=[check])) as gw:
            assert gw.stats.value("cluster.secure.membership_healthy") == healthy
            assert gw.stats.value("cluster.secure.health_check.success") == healthy
