"""Memory under connection churn, with the task tree on: closed connections are freed.

Rounds of HTTP/1.1 requests (some failing: 400, 502), WebSocket tunnels and HTTP/2 (h2c)
connections are opened and closed over real sockets while two bystander connections (one
HTTP/1.1, one HTTP/2) stay open and keep being served. After each round the live gateway
objects, counted with the cyclic GC switched off, must be back at their baseline: a closed
connection is freed by reference counting when it closes, not whenever the cyclic GC gets
to it (`gateway serve` makes that rare: cli._tune_gc). The count after a gc.collect() goes
in the failure message, to tell a leak from a reference cycle. RSS must stay flat round over round.

GATEWAY_CHURN_ROUNDS and GATEWAY_CHURN_CONNECTIONS (per kind and round) make it longer.
"""

import collections
import gc
import itertools
import os
import socket
import time
import types
from collections.abc import Awaitable, Callable
from functools import partial

import h2.connection
import h2.events
import trio
import trio.testing
from trio_websocket import open_websocket_url

from gateway import Gateway
from gateway.http.active_stream import ActiveStream
from gateway.http.conn_h1 import Http1Connection
from gateway.http.conn_h2 import H2StreamEncoder, Http2Connection
from gateway.http.conn_h3 import H3StreamEncoder, Http3Connection
from gateway.io.h2_transport import H2Transport
from gateway.io.quic_transport import QuicTransport
from gateway.observability.tasktree import Annotation
from gateway.protocol.codec_h1_server import ServerCodec
from gateway.protocol.codec_h2 import H2Codec
from gateway.protocol.codec_h3 import H3Codec, _Quic
from tests.config_builder import ConfigBuilder, proxy_config, route
from tests.h3_clients import H3Peer, H3Request, h3_request
from tests.helpers import (
    KeepAliveUpstream,
    RawH2Client,
    eventually,
    read_until,
    run_gateway,
    start_keepalive_upstream,
)
from tests.tls_helpers import Pki
from tests.ws_echo import EchoServer, start_echo_server

ROUNDS = int(os.environ.get("GATEWAY_CHURN_ROUNDS", "3"))
CONNECTIONS = int(os.environ.get("GATEWAY_CHURN_CONNECTIONS", "40"))
#: Clients at once: enough to overlap connections, few enough for a 2-core CI machine.
CONCURRENCY = 16
#: RSS may move this much between rounds (allocator arenas, the clients' own garbage).
RSS_SLACK_KIB = 1024
#: What a bystander's request may take while the churn goes on (the clients share its loop).
BYSTANDER_MAX_S = 1.0

#: What one downstream connection leaves behind if it is not freed.
TRACKED: tuple[type, ...] = (
    Http1Connection,
    ServerCodec,
    Http2Connection,
    H2Transport,
    H2Codec,
    H2StreamEncoder,
    ActiveStream,
    Annotation,
)

ROUTES = [route("/ws", cluster="ws"), route("/refused", cluster="refused")]


def live_objects() -> collections.Counter[str]:
    """Live gateway connection objects by type (the gateway's own h2 connections only:
    the clients' are the test's), and the gateway's closures by name (one made per
    connection that outlives it is a leak or a cycle too)."""
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        if isinstance(obj, TRACKED):
            counts[type(obj).__name__] += 1
        elif isinstance(obj, h2.connection.H2Connection) and not obj.config.client_side:
            counts["H2Connection (server side)"] += 1
        elif (
            isinstance(obj, types.FunctionType)
            and obj.__closure__
            and (obj.__module__ or "").startswith("gateway.")
        ):
            counts[f"closure {obj.__qualname__}"] += 1
    return counts


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def http1_request(port: int) -> None:
    """One request on a new connection, then the client closes it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /churn HTTP/1.1\r\nhost: churn\r\n\r\n")
        response = await read_until(stream, b"\r\n\r\nok")
        assert response.startswith(b"HTTP/1.1 200"), response


#: Requests that fail, each with the status it gets: a bad head and a bad chunk in a body
#: (400, and the connection closes), and one whose upstream refuses to connect.
FAILING = (
    (b"GET /churn HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n", b"400"),
    (
        b"POST /churn HTTP/1.1\r\nhost: churn\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX",
        b"400",
    ),
    (b"GET /refused HTTP/1.1\r\nhost: churn\r\n\r\n", b"502"),
)


async def http1_failing(port: int, request: bytes, status: bytes) -> None:
    """A request that gets an error, then the client closes the connection."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        response = await read_until(stream, b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 " + status), response


async def websocket_tunnel(port: int) -> None:
    """A WebSocket tunnel through the gateway to the echo server: one message, then close."""
    async with open_websocket_url(f"ws://127.0.0.1:{port}/ws") as ws:
        await ws.send_message("churn")
        assert await ws.get_message() == "churn"


async def h2_request(client: RawH2Client) -> None:
    stream_id = client.request("/churn")
    await client.flush()
    await client.read_until(
        lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == stream_id
    )


async def h2_connection(port: int) -> None:
    """An h2c connection with one request, then the client closes it."""
    client = await RawH2Client.connect(port)
    async with client.stream:
        await h2_request(client)


async def run_many(job: Callable[[], Awaitable[None]], count: int) -> None:
    limiter = trio.CapacityLimiter(CONCURRENCY)

    async def one() -> None:
        async with limiter:
            await job()

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one)


async def churn(gw: Gateway, count: int) -> None:
    """`count` connections of each kind, opened and closed; returns once the gateway has
    closed its side of every one."""
    port = gw.listener_ports["edge"]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_many, partial(http1_request, port), count)
        nursery.start_soon(run_many, partial(websocket_tunnel, port), count // 2)
        nursery.start_soon(run_many, partial(h2_connection, port), count)
        for request, status in FAILING:
            nursery.start_soon(run_many, partial(http1_failing, port, request, status), count // 4)
    # The two bystanders stay. A connection's task ends just after the gauge moves (it
    # closes the socket), and its objects live as long as the task.
    await eventually(lambda: gw.stats.value("listener.edge.downstream_cx_active") == 2)
    await trio.testing.wait_all_tasks_blocked(0.01)


async def bystanders(gw: Gateway, latencies: list[float]) -> None:
    """One HTTP/1.1 and one HTTP/2 connection that stay open, each asking every 20 ms."""
    port = gw.listener_ports["edge"]
    h1 = await trio.open_tcp_stream("127.0.0.1", port)
    h2c = await RawH2Client.connect(port)
    async with h1, h2c.stream:
        while True:
            started = time.monotonic()
            await h1.send_all(b"GET /bystander HTTP/1.1\r\nhost: bystander\r\n\r\n")
            assert (await read_until(h1, b"\r\n\r\nok")).startswith(b"HTTP/1.1 200")
            await h2_request(h2c)
            h2c.events.clear()  # the client keeps every event: only RSS would see them
            latencies.append(time.monotonic() - started)
            await trio.sleep(0.02)


def leaked(baseline: collections.Counter[str], now: collections.Counter[str]) -> dict[str, int]:
    """What differs from the baseline, by type."""
    return {
        name: now[name] - baseline[name] for name in now | baseline if now[name] != baseline[name]
    }


async def test_closed_connections_are_freed_and_rss_stays_flat(nursery):
    upstream = await start_keepalive_upstream(nursery)
    echo = await start_echo_server(nursery)
    with socket.socket() as unused:  # bound, never listening: connects are refused
        unused.bind(("127.0.0.1", 0))
        config = proxy_config(upstream.port, listener={"upgrade": ["websocket"]}, routes=ROUTES)
        config.cluster("ws", echo.port)
        config.cluster("refused", unused.getsockname()[1])
        await run_churn(config, upstream, echo)


async def run_churn(config: ConfigBuilder, upstream: KeepAliveUpstream, echo: EchoServer) -> None:
    # The bystanders' nursery ends before the gateway drains (a failure cancels them).
    async with run_gateway(config) as gw, trio.open_nursery() as load:
        latencies: list[float] = []
        load.start_soon(bystanders, gw, latencies)
        await eventually(lambda: len(latencies) >= 1)
        await trio.testing.wait_all_tasks_blocked(0.01)
        gc.collect()
        baseline = live_objects()
        rss: list[int] = []
        tunnels = 0
        gc.disable()
        try:
            # Round 0 fills what lives on (pooled upstream connections, allocator arenas).
            for round_number in range(ROUNDS + 1):
                await churn(gw, CONNECTIONS)
                by_refcount = leaked(baseline, live_objects())
                gc.collect()
                after_collect = leaked(baseline, live_objects())
                # The echo server's record of each tunnel would grow RSS: count, then drop.
                tunnels += len(echo.handshakes)
                echo.handshakes.clear()
                echo.closes.clear()
                rss.append(rss_kib())
                assert not by_refcount, (
                    f"round {round_number}: closed connections still alive without the "
                    f"cyclic GC: {by_refcount}; after gc.collect(): {after_collect}"
                )
        finally:
            gc.enable()
        load.cancel_scope.cancel()
    print(f"RSS after each round (KiB): {rss}; slowest bystander: {max(latencies):.3f} s")
    growth = [after - before for before, after in itertools.pairwise(rss)]
    assert max(growth, default=0) <= RSS_SLACK_KIB, f"RSS after each round (KiB): {rss}"
    # Every HTTP/1.1 and HTTP/2 request reached the upstream, every tunnel the echo server.
    assert upstream.served >= (ROUNDS + 1) * 2 * CONNECTIONS
    assert tunnels == (ROUNDS + 1) * (CONNECTIONS // 2)
    # The bystanders were served throughout, and promptly.
    assert len(latencies) > ROUNDS
    assert max(latencies) < BYSTANDER_MAX_S, sorted(latencies)[-5:]


async def test_closed_quic_connections_are_freed(nursery, tmp_path):
    """The same for HTTP/3: QUIC connections opened and closed (each with a request) are
    freed by reference counting once closed, aioquic's state included."""
    quic_types = (Http3Connection, H3StreamEncoder, QuicTransport, H3Codec, _Quic, ActiveStream)
    pki = Pki(tmp_path)
    cert = pki.issue("localhost")
    upstream = await start_keepalive_upstream(nursery)
    config = proxy_config(upstream.port)
    config.listener(
        "h3", protocol="quic", virtual_hosts=["main"], quic={"certificates": [cert.table()]}
    )

    def live() -> collections.Counter[str]:
        return collections.Counter(
            type(o).__name__ for o in gc.get_objects() if isinstance(o, quic_types)
        )

    async with run_gateway(config) as gw:
        peer = H3Peer(gw.listener_ports["h3"], pki.ca_file)
        await h3_request(peer, H3Request(path="/warm"))
        await eventually(lambda: gw.stats.value("listener.h3.downstream_cx_active") == 0, 5)
        gc.collect()
        baseline = live()
        gc.disable()
        try:
            for i in range(10):
                assert (await h3_request(peer, H3Request(path=f"/{i}"))).status == 200
            await eventually(lambda: gw.stats.value("listener.h3.downstream_cx_active") == 0, 5)
            by_refcount = leaked(baseline, live())
            gc.collect()
            after_collect = leaked(baseline, live())
        finally:
            gc.enable()
        assert not by_refcount, (
            f"alive without the cyclic GC: {by_refcount}; after: {after_collect}"
        )
