"""The HTTP connection manager, its filters, the router, the pools, TLS both ways, tunnels
and tcp_proxy, with no socket: clients and upstreams are memory streams
(tests/memory_net.py) and time is trio's MockClock, which jumps ahead whenever every task
waits. Route timeouts, retry back-offs and idle expiry that take seconds or minutes run in
milliseconds of wall time, and each test checks that virtual time moved as much as the
behaviour says."""

import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import h2.config
import h2.connection
import h2.events
import hyperframe.frame
import pytest
import trio
import trio.testing

from gateway.io.byte_stream import ByteStream
from gateway.io.tls_stream import TlsStream
from tests.config_builder import ConfigBuilder, proxy_config, route
from tests.memory_net import (
    Answer,
    H1Client,
    H1Upstream,
    H2Upstream,
    MemoryStream,
    Response,
    SeenRequest,
    TlsServer,
    memory_gateway,
)
from tests.tls_helpers import Pki

UPSTREAM = "127.0.0.1:8001"

#: Wall time a test may take for what it runs in virtual time (it takes tens of ms; the
#: margin is for a loaded machine).
WALL_BUDGET = 2.0

MARK = {
    "type": "header_mutation",
    "request_headers_to_add": {"x-gateway": "1"},
    "response_headers_to_add": {"x-served-by": "gateway"},
}


@attrs.define
class Took:
    """Virtual and wall seconds a block took (filled in when it ends)."""

    virtual: float = 0.0
    wall: float = 0.0

    def check(self, low: float, high: float) -> None:
        """Virtual time within [low, high], wall time within the budget."""
        assert low <= self.virtual <= high
        assert self.wall < WALL_BUDGET


@contextmanager
def elapsed() -> Iterator[Took]:
    took = Took()
    virtual, wall = trio.current_time(), time.perf_counter()
    yield took
    took.virtual, took.wall = trio.current_time() - virtual, time.perf_counter() - wall


def config(**catch_all: object) -> ConfigBuilder:
    return proxy_config(UPSTREAM, http_filters={"mark": MARK}, catch_all=catch_all)


async def test_http1_goes_through_a_filter_and_the_router_to_a_reused_pooled_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = H1Upstream()
    async with memory_gateway(config()) as gw:
        gw.network.listen(UPSTREAM, upstream.serve)
        client = H1Client(gw.connect(peer="10.0.0.7:40000"))
        first = await client.request("GET", "/one")
        second = await client.request("POST", "/two")

        assert (first.status, first.body) == (200, b"GET /one")
        assert (second.status, second.body) == (200, b"POST /two")
        assert first.headers["x-served-by"] == "gateway"  # the filter, on the way back
        seen = upstream.requests[0].headers
        assert seen["x-gateway"] == "1"  # the filter, on the way up
        assert seen["x-forwarded-for"] == "10.0.0.7"  # the HCM's edge headers
        # Keep-alive upstream: both requests on one pooled connection, idle again now.
        assert [r.connection for r in upstream.requests] == [0, 0]
        assert gw.network.connects[UPSTREAM] == 1
        assert gw.stat("cluster.backend.upstream_cx_total") == 1
        pool = gw.clusters.get("backend").hosts[0].pool.statistics()
        assert (pool.open, pool.idle, pool.waiting) == (1, 1, 0)
        assert gw.stat("http.edge.downstream_cx_http1_total") == 1


async def h2_get(stream: ByteStream, path: str) -> Response:
    """One GET over HTTP/2 (prior knowledge), with h2 as the client."""
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    request = [(":method", "GET"), (":scheme", "http"), (":authority", "example.com")]
    conn.send_headers(1, [*request, (":path", path)], end_stream=True)
    await stream.send_all(conn.data_to_send())
    headers: dict[str, str] = {}
    body = b""
    while True:
        data = await stream.receive_some()
        assert data, "the gateway closed the connection before the response ended"
        for event in conn.receive_data(bytes(data)):
            if isinstance(event, h2.events.ResponseReceived):
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, 1)
            elif isinstance(event, h2.events.StreamEnded):
                return Response(int(headers.pop(":status")), headers, body)
        await stream.send_all(conn.data_to_send())


async def test_http2_downstream_goes_through_the_filter_and_router_to_http1_upstream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = H1Upstream()
    async with memory_gateway(config()) as gw:
        gw.network.listen(UPSTREAM, upstream.serve)
        response = await h2_get(gw.connect(), "/over-h2")

        assert (response.status, response.body) == (200, b"GET /over-h2")
        assert response.headers["x-served-by"] == "gateway"
        assert upstream.requests[0].headers["x-gateway"] == "1"
        assert gw.stat("http.edge.downstream_cx_http2_total") == 1


async def test_a_route_timeout_of_30s_answers_504_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def never(request: SeenRequest) -> Answer:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    upstream = H1Upstream(respond=never)
    async with memory_gateway(config(timeout="30s")) as gw:
        gw.network.listen(UPSTREAM, upstream.serve)
        client = H1Client(gw.connect())
        with elapsed() as took:
            response = await client.request("GET", "/slow")

        assert (response.status, response.body) == (504, b"upstream request timeout")
        assert gw.stat("cluster.backend.upstream_rq_timeout") == 1
        # The connection the upstream never answered on is not given back to the pool.
        assert gw.clusters.get("backend").hosts[0].pool.statistics().open == 0
    took.check(30, 30.1)


async def test_a_503_is_retried_after_a_back_off_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def unavailable_once(request: SeenRequest) -> Answer:
        if len(upstream.requests) == 1:
            return 503, [], b"try again"
        return 200, [], b"second time lucky"

    upstream = H1Upstream(respond=unavailable_once)
    retry_policy = {
        "retry_on": ["retriable-status-codes"],
        "retriable_status_codes": [503],
        "retry_back_off": {"base_interval": "10s", "max_interval": "10s"},
    }
    async with memory_gateway(config(timeout="60s", retry_policy=retry_policy)) as gw:
        gw.network.listen(UPSTREAM, upstream.serve)
        client = H1Client(gw.connect())
        with elapsed() as took:
            response = await client.request("GET", "/flaky")

        assert (response.status, response.body) == (200, b"second time lucky")
        assert len(upstream.requests) == 2
        assert gw.stat("cluster.backend.upstream_rq_retry") == 1
        assert gw.stat("cluster.backend.upstream_rq_retry_success") == 1
    took.check(0, 10)  # the back-off: a random wait of up to base_interval
    assert took.virtual > 0


async def test_an_idle_downstream_connection_is_closed_after_the_listener_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = H1Upstream()
    cfg = config()
    cfg.listener("edge", idle_timeout="120s")
    async with memory_gateway(cfg) as gw:
        gw.network.listen(UPSTREAM, upstream.serve)
        client = H1Client(gw.connect())
        assert (await client.request("GET", "/")).status == 200
        with elapsed() as took:
            await client.wait_closed()

        assert gw.stat("http.edge.downstream_cx_idle_timeout") == 1
    took.check(120, 120.1)


@pytest.mark.parametrize("protocol", ["http1", "http2"])
async def test_an_idle_pooled_connection_is_closed_after_the_cluster_idle_timeout(
    autojump_clock: trio.testing.MockClock, protocol: str
) -> None:
    upstream = H1Upstream() if protocol == "http1" else H2Upstream()
    cfg = config()
    cfg.cluster("backend", protocol=protocol, idle_timeout="30s")
    async with memory_gateway(cfg) as gw:
        gw.network.listen(UPSTREAM, upstream.serve)
        assert (await H1Client(gw.connect()).request("GET", "/")).status == 200
        pool = gw.clusters.get("backend").hosts[0].pool
        assert (pool.statistics().open, pool.statistics().idle) == (1, 1)
        with elapsed() as took:
            while pool.statistics().open:
                await trio.sleep(1)

        assert gw.stat("cluster.backend.upstream_cx_idle_timeout") == 1
    took.check(30, 46)  # the reaper looks every idle_timeout / 2


async def test_a_pooled_connection_the_upstream_closed_while_idle_is_not_reused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = H1Upstream(max_requests_per_connection=1)
    async with memory_gateway(config()) as gw:
        gw.network.listen(UPSTREAM, upstream.serve)
        client = H1Client(gw.connect())
        assert (await client.request("GET", "/first")).status == 200
        await upstream.wait_closed()  # closed under the pool, which still holds it
        assert gw.clusters.get("backend").hosts[0].pool.statistics().idle == 1

        second = await client.request("GET", "/second")

        assert (second.status, second.body) == (200, b"GET /second")
        assert [r.connection for r in upstream.requests] == [0, 1]
        assert gw.stat("cluster.backend.upstream_cx_idle_timeout") == 1  # found stale


async def test_requests_at_once_share_one_pooled_http2_upstream_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    both_in = trio.Event()

    async def when_both_are_in(request: SeenRequest) -> Answer:
        if len(upstream.requests) == 2:
            both_in.set()
        await both_in.wait()  # so the two streams are open on the connection together
        return 200, [], request.target.encode()

    upstream = H2Upstream(respond=when_both_are_in)
    cfg = config()
    cfg.cluster("backend", protocol="http2")
    async with memory_gateway(cfg) as gw:
        gw.network.listen(UPSTREAM, upstream.serve)
        bodies: list[bytes] = []

        async def get(path: str) -> None:
            bodies.append((await H1Client(gw.connect()).request("GET", path)).body)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(get, "/a")
            nursery.start_soon(get, "/b")

        assert sorted(bodies) == [b"/a", b"/b"]
        assert [r.connection for r in upstream.requests] == [0, 0]
        assert gw.network.connects[UPSTREAM] == 1
        pool = gw.clusters.get("backend").hosts[0].pool.statistics()
        assert (pool.open, pool.idle) == (1, 1)
        assert upstream.requests[0].headers["x-gateway"] == "1"


@pytest.mark.parametrize("protocol", ["http1", "http2"])
async def test_a_body_here_with_its_head_goes_upstream_in_the_same_write(
    autojump_clock: trio.testing.MockClock, protocol: str
) -> None:
    upstream = H1Upstream() if protocol == "http1" else H2Upstream()
    ends: list[ByteStream] = []

    async def serve(stream: ByteStream) -> None:
        ends.append(stream)
        await upstream.serve(stream)

    cfg = config()
    cfg.cluster("backend", protocol=protocol)
    async with memory_gateway(cfg) as gw:
        gw.network.listen(UPSTREAM, serve)
        client = H1Client(gw.connect())
        assert (await client.request("POST", "/upload", body=b"hello")).status == 200

        assert isinstance(ends[0], MemoryStream) and ends[0].peer is not None
        first = ends[0].peer.writes[0]  # the gateway's first write on the connection
        if protocol == "http1":
            assert first.startswith(b"POST /upload HTTP/1.1\r\n")
            assert first.endswith(b"\r\n\r\nhello")
        else:
            frames = _frames(first.removeprefix(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
            data = [f for f in frames if isinstance(f, hyperframe.frame.DataFrame)]
            assert any(isinstance(f, hyperframe.frame.HeadersFrame) for f in frames)
            assert [(f.data, "END_STREAM" in f.flags) for f in data] == [(b"hello", True)]


async def test_a_response_here_whole_with_trailers_goes_downstream_in_one_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A gRPC call's answer: head, message and status trailers, all in the upstream's one
    # write. They reach an HTTP/2 client in one write too, not one per frame.
    upstream = H2Upstream(trailers=[("grpc-status", "0")])
    cfg = config()
    cfg.cluster("backend", protocol="http2")
    async with memory_gateway(cfg) as gw:
        gw.network.listen(UPSTREAM, upstream.serve)
        client = gw.connect()
        response = await h2_get(client, "/call")
        assert (response.status, response.body) == (200, b"GET /call")

        assert client.peer is not None
        answer = [w for w in client.peer.writes if b"/call" in w]  # where the body left
        assert len(answer) == 1
        frames = _frames(answer[0])
        assert [type(f).__name__ for f in frames] == ["HeadersFrame", "DataFrame", "HeadersFrame"]
        assert "END_STREAM" in frames[-1].flags


def _frames(data: bytes) -> list[hyperframe.frame.Frame]:
    frames = []
    while data:
        frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


async def test_a_websocket_tunnel_echoes_passes_a_half_close_and_idles_out_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = H1Upstream()
    cfg = proxy_config(
        UPSTREAM,
        listener={"upgrade": ["websocket"]},
        catch_all={"tunnel_idle_timeout": "90s"},
    )
    async with memory_gateway(cfg) as gw:
        gw.network.listen(UPSTREAM, upstream.serve)
        client = H1Client(gw.connect())
        assert await client.upgrade("/ws") == 101
        await client.stream.send_all(b"ping")
        assert await client.stream.receive_some() == b"ping"
        # The client's half-close reaches the upstream, which then closes its side too: at
        # once, not when the idle timeout would have ended the tunnel.
        with elapsed() as half_close:
            await client.stream.send_eof()
            await upstream.wait_closed()
            await client.wait_closed()
        half_close.check(0, 0.1)
        assert upstream.requests[0].headers["upgrade"] == "websocket"

        # A second tunnel that goes quiet is cut by the route's tunnel_idle_timeout.
        quiet = H1Client(gw.connect())
        assert await quiet.upgrade("/ws") == 101
        with elapsed() as took:
            await quiet.wait_closed()
        assert gw.stat("http.edge.downstream_cx_upgrades_total") == 2
    took.check(90, 90.1)


async def test_tcp_proxy_relays_bytes_and_idles_out_in_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream_closed = trio.Event()

    async def echo(stream: ByteStream) -> None:
        while data := await stream.receive_some():
            await stream.send_all(data)
        upstream_closed.set()  # the gateway closed the upstream connection

    cfg = ConfigBuilder(admin=False)
    proxy = {"type": "tcp_proxy", "cluster": "raw", "stat_prefix": "raw", "idle_timeout": "45s"}
    cfg.filter_chain("edge", filters=[proxy])
    cfg.cluster("raw", UPSTREAM)
    async with memory_gateway(cfg) as gw:
        gw.network.listen(UPSTREAM, echo)
        client = gw.connect()
        await client.send_all(b"hello")
        assert await client.receive_some() == b"hello"
        assert gw.stat("cluster.raw.upstream_cx_active") == 1
        with elapsed() as took:
            while await client.receive_some():
                pass
            await upstream_closed.wait()

        assert gw.stat("tcp.raw.idle_timeout") == 1
        assert gw.stat("cluster.raw.upstream_cx_active") == 0
    took.check(45, 45.1)


def upstream_tls(pki: Pki, name: str) -> ssl.SSLContext:
    """A server context with a certificate for `name`, speaking HTTP/1.1."""
    files = pki.issue(name)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.certificate_chain, files.private_key)
    context.set_alpn_protocols(["http/1.1"])
    return context


async def test_upstream_tls_over_memory_streams_sends_sni_verifies_and_is_pooled(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    pki = Pki(tmp_path)
    upstream = H1Upstream()
    server = TlsServer(upstream_tls(pki, "api.internal"), upstream.serve)
    cfg = config()
    cfg.cluster("backend", tls={"sni": "api.internal", "trusted_ca": pki.ca_file})
    async with memory_gateway(cfg) as gw:
        gw.network.listen(UPSTREAM, server)
        client = H1Client(gw.connect())
        first = await client.request("GET", "/secure")
        second = await client.request("GET", "/again")

        assert (first.status, first.body) == (200, b"GET /secure")
        assert second.status == 200
        # One handshake, with the cluster's SNI and ALPN: the TLS connection was pooled.
        assert server.handshakes == [("api.internal", "http/1.1")]
        assert [r.connection for r in upstream.requests] == [0, 0]


async def test_an_upstream_certificate_for_another_name_fails_the_connect(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    pki = Pki(tmp_path)
    upstream = H1Upstream()
    server = TlsServer(upstream_tls(pki, "db.internal"), upstream.serve)
    cfg = config()
    cfg.cluster("backend", tls={"sni": "api.internal", "trusted_ca": pki.ca_file})
    async with memory_gateway(cfg) as gw:
        gw.network.listen(UPSTREAM, server)
        response = await H1Client(gw.connect()).request("GET", "/secure")

        assert response.status == 502
        assert upstream.requests == []
        assert gw.stat("cluster.backend.upstream_cx_connect_fail") == 1


async def test_tls_termination_picks_http2_by_alpn_over_memory_streams(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    pki = Pki(tmp_path)
    certificate = pki.issue("gateway.example")
    upstream = H1Upstream()
    cfg = ConfigBuilder(admin=False)
    hcm = {"type": "http_connection_manager", "virtual_hosts": ["main"], "stat_prefix": "edge"}
    cfg.filter_chain("edge", tls={"certificates": [certificate.table()]}, filters=[hcm])
    cfg.virtual_host("main", route(cluster="backend"))
    cfg.cluster("backend", UPSTREAM)
    async with memory_gateway(cfg) as gw:
        gw.network.listen(UPSTREAM, upstream.serve)
        raw: ByteStream = gw.connect(server_name="gateway.example")
        tls = trio.SSLStream(
            raw, pki.client_context(alpn=["h2", "http/1.1"]), server_hostname="gateway.example"
        )
        await tls.do_handshake()
        assert tls.selected_alpn_protocol() == "h2"

        response = await h2_get(TlsStream(tls), "/over-tls")

        assert (response.status, response.body) == (200, b"GET /over-tls")
        assert upstream.requests[0].headers["x-forwarded-proto"] == "https"
        assert gw.stat("http.edge.downstream_cx_http2_total") == 1
