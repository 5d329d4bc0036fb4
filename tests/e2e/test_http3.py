"""HTTP/3 end to end: real HTTP/3 clients from outside the project (aioquic's, and niquests
over qh3) against a QUIC listener, proxying to HTTP/1.1 and HTTP/2 upstreams: big bodies
both ways, 100 streams on one connection, trailers, clients that leave, route timeouts,
Alt-Svc from the TCP listener, WebSocket over HTTP/3, and what /tasks, stats and the
access log show."""

import json
import os
import socket
from functools import partial

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trio
from aioquic.h3.connection import ErrorCode

from gateway import open_gateway
from gateway.config import load_config
from gateway.protocol import grpc as grpc_frames
from tests import grpc_echo
from tests.config_builder import ConfigBuilder, proxy_config, route
from tests.h3_clients import (
    H3Peer,
    H3Request,
    H3StreamReset,
    h3_abandon,
    h3_request,
    h3_requests,
    h3_websocket,
    niquests_follow_alt_svc,
    niquests_h3_request,
)
from tests.h3_raw_client import RawH3Client
from tests.helpers import admin_url, eventually, free_port, run_gateway, start_upstream
from tests.tls_helpers import CertFiles, Pki
from tests.ws_echo import start_echo_server

MiB = 1 << 20


def with_quic(config: ConfigBuilder, cert: CertFiles, name: str = "h3", **keys: object) -> None:
    """Adds QUIC listener `name` serving virtual host `main`, and makes `edge` advertise it."""
    config.listener(
        name,
        protocol="quic",
        virtual_hosts=["main"],
        quic={"certificates": [cert.table()]},
        **keys,
    )
    config.listener("edge")["advertise_http3"] = name


def peer(gw, pki: Pki, name: str = "h3") -> H3Peer:
    return H3Peer(gw.listener_ports[name], pki.ca_file)


async def test_bodies_both_ways_through_http1_and_http2_upstreams(nursery, pki, cert):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, catch_all={"timeout": "60s"})
    config.cluster("backend_h2", up.port, protocol="http2")
    h2_route = route("/h2/", cluster="backend_h2", timeout="60s", prefix_rewrite="/")
    config.routes("main").insert(0, h2_route)
    with_quic(config, cert)
    async with run_gateway(config) as gw:
        p = peer(gw, pki)
        r = await h3_request(p, H3Request(path="/hello?x=1", headers=[("cookie", "a=1")]))
        assert r.status == 200
        seen = json.loads(r.body)
        assert seen["path"] == "/hello?x=1"
        assert seen["headers"]["x-forwarded-proto"] == "https"
        assert seen["headers"]["host"] == p.authority
        for prefix in ("", "/h2"):
            r = await h3_request(
                p, H3Request("POST", f"{prefix}/upload", body=b"u" * (10 * MiB)), timeout=60
            )
            assert r.status == 200 and json.loads(r.body)["body_bytes"] == 10 * MiB
            r = await h3_request(p, H3Request(path=f"{prefix}/big?size={10 * MiB}"), timeout=60)
            assert (r.status, len(r.body), r.complete) == (200, 10 * MiB, True), r.body[:300]
        # niquests (qh3), the other implementation, both ways too.
        r2 = await niquests_h3_request(p, "POST", "/h2/upload", body=b"n" * MiB, timeout=30)
        assert (r2.status, r2.http_version, json.loads(r2.body)["body_bytes"]) == (200, 30, MiB)
        r2 = await niquests_h3_request(p, "GET", f"/big?size={MiB}", timeout=30)
        assert (r2.status, len(r2.body)) == (200, MiB)
        assert gw.stats.value("http.h3.downstream_cx_http3_total") >= 7
        assert gw.stats.value("http.h3.downstream_rq_2xx") == 7


async def test_a_hundred_streams_on_one_connection(nursery, pki, cert):
    up = await start_upstream(nursery)
    config = proxy_config(up.port)
    with_quic(config, cert)
    async with run_gateway(config) as gw:
        requests = [H3Request(path=f"/s/{i}") for i in range(100)]
        responses = await h3_requests(peer(gw, pki), requests, timeout=60)
        assert [json.loads(r.body)["path"] for r in responses] == [f"/s/{i}" for i in range(100)]
        assert gw.stats.value("http.h3.downstream_cx_http3_total") == 1
        assert gw.stats.value("http.h3.http3.quic_version_rfc_v1") == 1
        assert gw.stats.value("http.h3.downstream_rq_total") == 100


async def test_grpc_over_http3_gets_its_trailers(pki, cert):
    server, port, _ = grpc_echo.start_server()
    try:
        config = grpc_echo.echo_config(port)
        config.listener(
            "h3", protocol="quic", virtual_hosts=["grpc"], quic={"certificates": [cert.table()]}
        )
        async with run_gateway(config) as gw:
            call = H3Request(
                "POST",
                "/test.Echo/Unary",
                headers=[("content-type", "application/grpc"), ("te", "trailers")],
                body=grpc_frames.frame(b"ping"),
            )
            r = await h3_request(peer(gw, pki), call)
            assert r.status == 200 and r.body == grpc_frames.frame(b"ping")
            assert ("grpc-status", "0") in r.trailers
            failing = H3Request(
                "POST", "/test.Echo/Unary", headers=call.headers, body=grpc_frames.frame(b"fail")
            )
            r = await h3_request(peer(gw, pki), failing)
            # A call that fails before any message is "trailers-only": one HEADERS frame.
            assert (r.status, r.body, r.trailers) == (200, b"", [])
            assert r.header("grpc-status") == "3" and r.header("x-detail") == "why-it-failed"
    finally:
        server.stop(None)


async def test_request_trailers_reach_an_http2_upstream(nursery, pki, cert):
    seen: list[list[tuple[bytes, bytes]]] = []

    async def serve(stream: trio.SocketStream) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        await stream.send_all(conn.data_to_send())
        while data := await stream.receive_some(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.TrailersReceived):
                    seen.append(list(event.headers))
                    conn.send_headers(event.stream_id, [(":status", "200")])
                    conn.send_data(event.stream_id, b"got them", end_stream=True)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            await stream.send_all(conn.data_to_send())

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, serve, listeners)
    config = proxy_config(listeners[0].socket.getsockname()[1], cluster={"protocol": "http2"})
    with_quic(config, cert)
    async with run_gateway(config) as gw:
        request = H3Request(
            "POST", "/t", body=b"abc", trailers=[("x-checksum", "900150983cd24fb0")]
        )
        r = await h3_request(peer(gw, pki), request)
        assert (r.status, r.body) == (200, b"got them")
        assert seen == [[(b"x-checksum", b"900150983cd24fb0")]]


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_a_client_that_goes_away_cancels_the_upstream_request(nursery, pki, cert, how):
    up = await start_upstream(nursery)
    config = proxy_config(up.port)
    with_quic(config, cert)
    async with run_gateway(config) as gw:
        p = peer(gw, pki)
        partial = await h3_abandon(p, H3Request(path="/hang"), at="request", how=how, pause=0.5)
        assert not partial.complete
        with trio.fail_after(5):
            await up.disconnected.wait()  # the gateway gave up the upstream request
        # A client that merely stops reading a streaming response is cut off the same way.
        bystander = await h3_request(p, H3Request(path="/still-served"))
        assert bystander.status == 200
        await eventually(lambda: gw.stats.value("http.h3.downstream_rq_active") == 0, 5)
        if how == "reset":
            assert gw.stats.value("http.h3.downstream_rq_rx_reset") == 1
            assert gw.stats.value("http.h3.http3.rx_reset") == 1


async def test_a_client_that_vanishes_is_forgotten_after_the_idle_timeout(nursery, pki, cert):
    up = await start_upstream(nursery)
    config = proxy_config(up.port)
    with_quic(config, cert, idle_timeout="1s")
    config.listener("h3")["quic"]["idle_timeout"] = "1s"
    async with run_gateway(config) as gw:
        partial = await h3_abandon(
            peer(gw, pki), H3Request(path="/stream"), at="response", how="vanish", linger=0.1
        )
        assert partial.status == 200 and not partial.complete
        await eventually(lambda: gw.stats.value("listener.h3.downstream_cx_active") == 0, 10)
        with trio.fail_after(5):
            await up.disconnected.wait()


async def test_route_timeout(nursery, pki, cert):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, catch_all={"timeout": "300ms"})
    with_quic(config, cert)
    async with run_gateway(config) as gw:
        r = await h3_request(peer(gw, pki), H3Request(path="/slow?delay=5"))
        assert (r.status, r.body) == (504, b"upstream request timeout")
        assert gw.stats.value("http.h3.downstream_rq_5xx") == 1


async def test_the_tcp_listener_advertises_http3_and_clients_move(nursery, pki, cert):
    up = await start_upstream(nursery)
    config = proxy_config(up.port)
    config.listener("edge").pop("virtual_hosts")
    config.filter_chain(
        "edge",
        tls={"certificates": [cert.table()]},
        filters=[
            {"type": "http_connection_manager", "virtual_hosts": ["main"], "advertise_http3": "h3"}
        ],
    )
    config.listener(
        "h3", protocol="quic", virtual_hosts=["main"], quic={"certificates": [cert.table()]}
    )
    async with run_gateway(config) as gw:
        udp = gw.listener_ports["h3"]
        async with httpx.AsyncClient(verify=pki.client_context()) as client:
            r = await client.get(f"https://localhost:{gw.listener_ports['edge']}/")
        assert r.headers["alt-svc"] == f'h3=":{udp}"; ma=86400'
        versions = await niquests_follow_alt_svc(
            H3Peer(gw.listener_ports["edge"], pki.ca_file), count=3, timeout=15
        )
        assert [v.status for v in versions] == [200, 200, 200]
        assert versions[0].http_version in (11, 20) and versions[-1].http_version == 30
        assert gw.stats.value("http.h3.downstream_cx_http3_total") >= 1
        # Responses over HTTP/3 do not advertise what they already use.
        r3 = await h3_request(peer(gw, pki), H3Request(path="/"))
        assert r3.header("alt-svc") is None


async def test_websocket_over_http3(nursery, pki, cert):
    echo = await start_echo_server(nursery)
    config = proxy_config(echo.port, listener={"upgrade": ["websocket"]})
    with_quic(config, cert, upgrade=["websocket"])
    async with run_gateway(config) as gw:
        result = await h3_websocket(peer(gw, pki), "/chat", ["hello", b"\x00bin", "again"])
        assert result.status == 200
        assert result.replies == ["hello", b"\x00bin", "again"]
        assert result.close_code == 1000
        assert gw.stats.value("http.h3.downstream_cx_upgrades_total") == 1
        await eventually(lambda: gw.stats.value("http.h3.downstream_cx_upgrades_active") == 0)


async def test_websocket_over_http3_is_refused_where_the_route_does_not_allow_it(
    nursery, pki, cert
):
    echo = await start_echo_server(nursery)
    config = proxy_config(echo.port)
    with_quic(config, cert)
    async with run_gateway(config) as gw:
        result = await h3_websocket(peer(gw, pki), "/chat", ["hello"])
        assert result.status == 403


async def test_tasks_stats_and_access_log_show_http3(nursery, pki, cert, tmp_path):
    up = await start_upstream(nursery)
    log_path = tmp_path / "access.log"
    config = proxy_config(up.port)
    with_quic(
        config,
        cert,
        access_log={
            "path": str(log_path),
            "text_format": "%PROTOCOL% %REQ(:PATH)%\n",
            "flush_interval": "0s",
        },
    )
    async with run_gateway(config) as gw, httpx.AsyncClient() as admin:
        p = peer(gw, pki)
        async with trio.open_nursery() as clients:
            clients.start_soon(
                partial(h3_abandon, p, H3Request(path="/stream"), at="response", how="close")
            )
            await eventually(lambda: [r.path for r in up.requests] == ["/stream"], 5)
            tree = (await admin.get(admin_url(gw, "/tasks"))).json()
            text = json.dumps(tree)
            assert "HTTP/3" in text and "stream 0 GET /stream" in text
        await eventually(lambda: log_path.exists() and "HTTP/3 /stream" in log_path.read_text())
        stats = (await admin.get(admin_url(gw, "/stats"))).text
        assert "http.h3.downstream_cx_http3_total: 1" in stats
        assert (
            "listener.h3.http3.downstream.rx.quic_connection_close_error_code_H3_NO_ERROR: 1"
            in (stats)
        )


async def test_a_rejected_stream_after_goaway_is_safe_to_retry(nursery, pki, cert):
    """Drain sends GOAWAY; what the client still opens is refused with
    H3_REQUEST_REJECTED, which tells it the request was not processed."""
    up = await start_upstream(nursery)
    config = proxy_config(up.port)
    config.server(drain_timeout="5s", drain_grace="0.2s")
    with_quic(config, cert)
    async with run_gateway(config) as gw:
        p = peer(gw, pki)
        assert (await h3_request(p, H3Request(path="/before"))).status == 200
        gw.drain_listeners()
        await trio.sleep(0.5)
        try:
            r = await h3_request(p, H3Request(path="/after"), timeout=5)
        except (H3StreamReset, TimeoutError) as exc:
            if isinstance(exc, H3StreamReset):
                assert exc.error_code == ErrorCode.H3_REQUEST_REJECTED
        else:
            pytest.fail(f"a drained listener served a new connection: {r.status}")
        assert [r.path for r in up.requests] == ["/before"]


async def test_a_reload_keeps_quic_connections_and_their_datagrams(nursery, pki, cert, tmp_path):
    """A reload hands the UDP socket, its reader and the connection-id routes to the new
    listener: a QUIC connection opened before it keeps working, with the new routes; one
    whose listener settings changed is told to go (GOAWAY) while new ones are served."""
    up = await start_upstream(nursery)
    path = tmp_path / "gateway.toml"

    def versioned(version: int, idle: str = "300s") -> str:
        config = proxy_config(
            up.port, catch_all={"response_headers_to_add": {"x-config-version": str(version)}}
        )
        config.server(drain_timeout="3s", drain_grace="200ms")
        with_quic(config, cert, idle_timeout=idle)
        return config.toml()

    path.write_text(versioned(1))
    async with open_gateway(load_config(path), str(path)) as gw, httpx.AsyncClient() as admin:
        port = gw.listener_ports["h3"]
        client = RawH3Client(port, pki.ca_file)
        await client.connect()
        head, _ = await client.get("/one")
        assert head[b"x-config-version"] == b"1"
        path.write_text(versioned(2))
        assert (await admin.post(admin_url(gw, "/reload"))).status_code == 200
        head, _ = await client.get("/two")  # the same QUIC connection, the new route
        assert head[b"x-config-version"] == b"2"
        path.write_text(versioned(3, idle="301s"))  # a listener setting: it drains
        assert (await admin.post(admin_url(gw, "/reload"))).status_code == 200
        # The old listener drains: GOAWAY, then after the drain grace its idle connection
        # is closed (H3_NO_ERROR), while new connections go to the new listener.
        fresh = await h3_request(peer(gw, pki), H3Request(path="/three"))
        assert fresh.header("x-config-version") == "3"
        await client.pump(until=lambda: client.closed is not None, quiet=3)
        assert client.closed is not None
        assert client.closed.error_code == ErrorCode.H3_NO_ERROR
        assert gw.listener_ports["h3"] == port  # the socket was never closed


NGINX = "/usr/sbin/nginx"
HAVE_NGINX = os.path.exists(NGINX)


@pytest.mark.skipif(not HAVE_NGINX, reason="nginx is not installed (apt-get install nginx)")
async def test_nginx_upstreams_over_http1_and_h2c(nursery, pki, cert, tmp_path):
    """nginx behind the QUIC listener, over HTTP/1.1 and h2c: 10 MiB both ways."""
    (tmp_path / "big.bin").write_bytes(b"n" * (10 * MiB))
    port, h2_port = free_port(), free_port()
    conf = tmp_path / "nginx.conf"
    temp_paths = "".join(
        f"{kind}_temp_path {tmp_path}/{kind}; "
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"daemon off; master_process off; worker_processes 1; pid {tmp_path}/nginx.pid; "
        "error_log stderr warn; events { worker_connections 256; } "
        f"http {{ access_log off; {temp_paths} client_max_body_size 64m; "
        f"server {{ listen 127.0.0.1:{port}; listen 127.0.0.1:{h2_port} http2; "
        f"location = /big {{ alias {tmp_path}/big.bin; }} "
        'location / { return 200 "nginx ok\\n"; } } }'
    )
    process = await trio.lowlevel.open_process([NGINX, "-p", str(tmp_path), "-c", str(conf)])
    try:
        await eventually(lambda: port_open(port) and port_open(h2_port), 5)
        config = proxy_config(port, catch_all={"timeout": "60s"})
        config.cluster("nginx_h2", h2_port, protocol="http2")
        h2_route = route("/h2/", cluster="nginx_h2", timeout="60s", prefix_rewrite="/")
        config.routes("main").insert(0, h2_route)
        with_quic(config, cert)
        async with run_gateway(config) as gw:
            p = peer(gw, pki)
            for prefix in ("", "/h2"):
                r = await h3_request(p, H3Request(path=f"{prefix}/big"), timeout=60)
                assert (r.status, len(r.body), r.complete) == (200, 10 * MiB, True)
                upload = H3Request("POST", f"{prefix}/upload", body=b"u" * (10 * MiB))
                r = await h3_request(p, upload, timeout=60)
                assert (r.status, r.body) == (200, b"nginx ok\n")
            assert gw.stats.value("cluster.nginx_h2.upstream_rq_total") == 2
    finally:
        process.terminate()
        await process.wait()


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


async def test_a_connection_survives_the_clients_address_changing(nursery, pki, cert):
    """A NAT rebinding: the client's packets start coming from another port. Datagrams
    are routed by connection id, not address, so the connection goes on (QUIC validates
    the new path before sending there in earnest)."""
    up = await start_upstream(nursery)
    config = proxy_config(up.port)
    with_quic(config, cert)
    async with run_gateway(config) as gw:
        client = RawH3Client(gw.listener_ports["h3"], pki.ca_file)
        await client.connect()
        head, _ = await client.get("/before")
        assert head[b":status"] == b"200"
        old_port = client.sock.getsockname()[1]
        client.sock.close()
        client.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await client.sock.bind(("127.0.0.1", 0))
        assert client.sock.getsockname()[1] != old_port
        head, body = await client.get("/after")
        assert head[b":status"] == b"200" and json.loads(body)["path"] == "/after"
        assert gw.stats.value("listener.h3.downstream_cx_total") == 1


async def test_a_reload_may_turn_a_tcp_listener_into_a_quic_one(nursery, pki, cert, tmp_path):
    """Same name, same address, another protocol: a new socket (UDP), the TCP one drains."""
    up = await start_upstream(nursery)
    path = tmp_path / "gateway.toml"
    config = proxy_config(up.port)
    config.listener("alt", address="127.0.0.1:0", virtual_hosts=["main"])
    path.write_text(config.toml())
    async with open_gateway(load_config(path), str(path)) as gw, httpx.AsyncClient() as admin:
        config.listener("alt", protocol="quic", quic={"certificates": [cert.table()]})
        path.write_text(config.toml())
        answer = await admin.post(admin_url(gw, "/reload"))
        assert answer.status_code == 200, answer.text
        r = await h3_request(peer(gw, pki, "alt"), H3Request(path="/now-quic"))
        assert r.status == 200
