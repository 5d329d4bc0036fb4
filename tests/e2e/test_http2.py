"""HTTP/2 end to end: h2c prior knowledge downstream, HTTP/2 upstreams, flow control,
resets, the rapid-reset defence and graceful GOAWAY."""

import resource
import shutil
import subprocess

import h2.errors
import h2.events
import httpx
import pytest
import trio

from tests.config_builder import proxy_config
from tests.helpers import (
    RawH2Client,
    eventually,
    run_gateway,
    start_scripted_h2_upstream,
    start_upstream,
    url,
)


def h2_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(http1=False, http2=True)  # h2c with prior knowledge


async def test_h2c_client_to_http1_upstream(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, h2_client() as client:
        r = await client.get(url(gw, "/hello?x=1"), headers={"cookie": "a=1"})
        assert r.http_version == "HTTP/2"
        seen = r.json()
        assert seen["path"] == "/hello?x=1"
        assert seen["headers"]["host"] == f"127.0.0.1:{gw.listener_ports['edge']}"
        assert seen["headers"]["x-forwarded-proto"] == "http"
        r = await client.post(url(gw, "/upload"), content=b"y" * 3_000_000)
        assert r.json()["body_bytes"] == 3_000_000
        assert gw.stats.value("http.edge.downstream_cx_http2_total") == 1


async def test_an_h2c_clients_scheme_does_not_make_it_https(nursery):
    """x-forwarded-proto is the connection's scheme (docs/configuration.md, edge headers):
    `:scheme https` and an `x-forwarded-proto: https` of its own on a cleartext connection
    still reach the upstream as `http`."""
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        client = await RawH2Client.connect(gw.listener_ports["edge"])
        stream_id = client.conn.get_next_available_stream_id()
        head = [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/")]
        client.conn.send_headers(
            stream_id, [*head, ("x-forwarded-proto", "https")], end_stream=True
        )
        await client.flush()
        await client.read_until(lambda e: isinstance(e, h2.events.StreamEnded))
        assert up.requests[-1].headers["x-forwarded-proto"] == "http"


async def test_streams_are_multiplexed_on_one_connection(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, h2_client() as client:
        results = []

        async def one(i: int) -> None:
            r = await client.get(url(gw, f"/slow?delay=0.2&i={i}"))
            results.append(r.status_code)

        start = trio.current_time()
        async with trio.open_nursery() as n:
            for i in range(20):
                n.start_soon(one, i)
        assert results == [200] * 20
        assert trio.current_time() - start < 1.5, "streams ran concurrently"
        assert gw.stats.value("listener.edge.downstream_cx_total") == 1


async def test_http2_upstream_shares_connections(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, cluster={"protocol": "http2"})
    async with run_gateway(config) as gw:
        async with httpx.AsyncClient() as h1, h2_client() as h2c:
            results = []

            async def one(client: httpx.AsyncClient, i: int) -> None:
                r = await client.get(url(gw, f"/slow?delay=0.1&i={i}"))
                results.append(r.status_code)

            async with trio.open_nursery() as n:
                for i in range(10):
                    n.start_soon(one, h1 if i % 2 else h2c, i)
            assert results == [200] * 10
            r = await h1.post(url(gw, "/echo"), content=b"z" * 2_000_000)
            assert r.json()["body_bytes"] == 2_000_000
            big = await h2c.get(url(gw, "/big?size=5000000"))
            assert len(big.content) == 5_000_000
        assert gw.stats.value("cluster.backend.upstream_cx_total") == 1


async def test_client_reset_cancels_only_that_stream(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        client = await RawH2Client.connect(gw.listener_ports["edge"])
        hang = client.request("/hang")
        ok = client.request("/slow?delay=0.2")
        await client.flush()
        await eventually(lambda: len(up.requests) == 2)
        client.conn.reset_stream(hang, h2.errors.ErrorCodes.CANCEL)
        await client.flush()
        with trio.fail_after(1):
            await up.disconnected.wait()  # the upstream saw the reset stream's request go
        events = await client.read_until(
            lambda e: isinstance(e, h2.events.StreamEnded) and e.stream_id == ok
        )
        data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        assert data == b"slow done"
        await eventually(lambda: gw.stats.value("http.edge.downstream_rq_rx_reset") == 1)
        assert gw.stats.value("http.edge.downstream_rq_tx_reset") == 0


async def test_client_reset_resets_the_upstream_http2_stream(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, cluster={"protocol": "http2"})
    async with run_gateway(config) as gw:
        client = await RawH2Client.connect(gw.listener_ports["edge"])
        hang = client.request("/hang")
        await client.flush()
        await eventually(lambda: len(up.requests) == 1)
        client.conn.reset_stream(hang, h2.errors.ErrorCodes.CANCEL)
        await client.flush()
        with trio.fail_after(1):
            await up.disconnected.wait()
        # The upstream connection survives for other streams.
        async with httpx.AsyncClient() as h1:
            assert (await h1.get(url(gw, "/after"))).status_code == 200
        assert gw.stats.value("cluster.backend.upstream_cx_total") == 1


async def test_rapid_reset_gets_goaway_and_spares_others(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, listener={"http2": {"max_stream_resets_per_second": 50}})
    async with run_gateway(config) as gw, h2_client() as bystander:
        assert (await bystander.get(url(gw, "/before"))).status_code == 200
        attacker = await RawH2Client.connect(gw.listener_ports["edge"])
        for _ in range(100):
            sid = attacker.request("/slow?delay=1")
            attacker.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        await attacker.flush()
        events = await attacker.read_until(lambda e: isinstance(e, h2.events.ConnectionTerminated))
        goaway = next(e for e in events if isinstance(e, h2.events.ConnectionTerminated))
        assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert gw.stats.value("http.edge.downstream_cx_rapid_reset") == 1
        assert (await bystander.get(url(gw, "/after"))).status_code == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl: apt-get install curl")
async def test_drain_sends_goaway_and_finishes_open_streams(nursery):
    """Python's h2 treats any GOAWAY as the end, so a real client (curl, nghttp2) proves
    the graceful kind: the in-flight stream completes after our GOAWAY."""
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        port = gw.listener_ports["edge"]
        curl = await trio.lowlevel.open_process(
            ["curl", "-sv", "--http2-prior-knowledge", f"http://127.0.0.1:{port}/slow?delay=0.5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        await eventually(lambda: len(up.requests) == 1)
        start = trio.current_time()
    # open_gateway returned: it drained while the request was in flight.
    assert trio.current_time() - start > 0.3
    out = await curl.stdout.receive_some(65536)
    err = b""
    while chunk := await curl.stderr.receive_some(65536):
        err += chunk
    assert await curl.wait() == 0
    assert out == b"slow done"
    assert b"GOAWAY" in err or b"GOAWAY" in err.upper()


async def test_slow_reader_keeps_memory_bounded(nursery):
    """100 MiB to a client that reads slowly: flow control holds the upstream back."""
    up = await start_upstream(nursery)
    size = 100 * 1024 * 1024
    async with run_gateway(proxy_config(up.port)) as gw, h2_client() as client:
        await client.get(url(gw, "/big?size=10"))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        received = 0
        async with client.stream("GET", url(gw, f"/big?size={size}")) as r:
            async for chunk in r.aiter_raw():
                received += len(chunk)
                if received < 5_000_000:
                    await trio.sleep(0.01)  # a slow start: the gateway must not buffer ahead
        assert received == size
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert grown_mb < 40, f"peak RSS grew by {grown_mb:.0f} MB"


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl: apt-get install curl")
async def test_curl_http2_prior_knowledge(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        result = await trio.run_process(
            ["curl", "-s", "--http2-prior-knowledge", "-w", "%{http_version}", url(gw, "/c")],
            capture_stdout=True,
            check=False,
        )
    assert result.returncode == 0
    assert result.stdout.endswith(b"2")
    assert b'"/c"' in result.stdout


async def test_upstream_goaway_moves_new_streams_to_a_new_connection(nursery):
    up = await start_scripted_h2_upstream(nursery, goaway_after=1)
    config = proxy_config(up.port, cluster={"protocol": "http2"})
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        for _ in range(3):
            r = await client.get(url(gw, "/"))
            assert (r.status_code, r.text) == (200, "h2 ok")
    assert up.connections == 3


async def test_keepalive_detects_a_dead_upstream_connection(nursery):
    up = await start_scripted_h2_upstream(nursery, silent=True)
    http2 = {"keepalive_interval": "100ms", "keepalive_timeout": "100ms"}
    cluster = {"protocol": "http2", "http2": http2}
    async with run_gateway(proxy_config(up.port, cluster=cluster)) as gw, httpx.AsyncClient() as c:
        start = trio.current_time()
        r = await c.get(url(gw, "/"))  # route timeout is 15 s: keepalive must end it sooner
        assert r.status_code == 502
        assert trio.current_time() - start < 2


async def test_upstream_connections_reaped_while_pinging_leave_the_gateway_serving(nursery):
    # The reaper closes idle connections while their keepalive pings are due: a ping that
    # finds its connection closed must end that connection's tasks, nothing more.
    up = await start_scripted_h2_upstream(nursery)
    http2 = {"keepalive_interval": "10ms", "keepalive_timeout": "1s"}
    cluster = {"protocol": "http2", "idle_timeout": "20ms", "http2": http2}
    async with run_gateway(proxy_config(up.port, cluster=cluster)) as gw, httpx.AsyncClient() as c:
        for i in range(30):
            r = await c.get(url(gw, "/"))
            assert (r.status_code, r.text) == (200, "h2 ok")
            # Idle long enough to be reaped, pinged meanwhile; every fifth pause outlasts
            # the reaper's round (50 ms) plus the idle timeout, so reaps happen for sure
            # (30 ms pauses alone met a round only by chance: one clean-checkout CI run
            # saw no reap at all).
            await trio.sleep(0.08 if i % 5 == 4 else 0.03)
        assert up.connections > 1


async def test_oversized_header_list_gets_goaway(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, listener={"http2": {"max_header_list_size": 4096}})
    async with run_gateway(config) as gw, h2_client() as bystander:
        attacker = await RawH2Client.connect(gw.listener_ports["edge"])
        await attacker.read_until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        sid = attacker.conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")]
        attacker.conn.send_headers(sid, [*headers, ("x-big", "a" * 10_000)], end_stream=True)
        await attacker.flush()
        events = await attacker.read_until(
            lambda e: isinstance(e, h2.events.ConnectionTerminated | h2.events.StreamReset)
        )
        assert any(
            isinstance(e, h2.events.ConnectionTerminated | h2.events.StreamReset) for e in events
        )
        assert up.requests == []
        assert (await bystander.get(url(gw, "/fine"))).status_code == 200


@pytest.mark.skipif(
    shutil.which("h2load") is None, reason="needs h2load: apt-get install nghttp2-client"
)
async def test_h2load_through_the_gateway(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        result = await trio.run_process(
            ["h2load", "-n", "400", "-c", "4", "-m", "10", url(gw, "/h2load")],
            capture_stdout=True,
            check=False,
        )
    out = result.stdout.decode()
    assert "400 succeeded, 0 failed, 0 errored" in out, out


async def test_client_goaway_with_streams_in_flight_is_quiet(nursery, caplog):
    """A client that sends GOAWAY with streams open (h2load's timed mode does) makes h2
    refuse every further send: those streams are abandoned (flag DC), quietly."""
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        client = await RawH2Client.connect(gw.listener_ports["edge"])
        for _ in range(5):
            client.request("/slow?delay=0.2")
        await client.flush()
        await eventually(lambda: len(up.requests) == 5)
        client.conn.close_connection()
        await client.flush()
        await eventually(lambda: gw.stats.value("http.edge.downstream_rq_active") == 0)
        await client.stream.aclose()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
