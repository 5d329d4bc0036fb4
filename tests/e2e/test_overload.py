"""The overload manager: a connection flood past `max_downstream_connections` is refused
(each closed at once, counted) while a client already connected, and one that connects
once the flood is gone, are served; and the RSS actions, triggered by setting `max_rss`
around the gateway's real RSS with reloads, shed requests (503 OM), end keep-alive
(HTTP/1.1 close, HTTP/2 GOAWAY) and stop accepts, and clear when it goes back up."""

import os
from pathlib import Path

import h2.events
import httpx
import trio

from gateway import loads_config
from tests.admin_helpers import nodes, tasks
from tests.config_builder import ConfigBuilder, proxy_config
from tests.helpers import (
    RawH2Client,
    admin_url,
    eventually,
    read_until,
    run_gateway,
    start_upstream,
    url,
)

REQUEST = b"GET /canary HTTP/1.1\r\nHost: x\r\n\r\n"


def rss() -> int:
    """This process's RSS, the gateway's own: it runs in the test's Trio loop."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def exchange(stream: trio.SocketStream, request: bytes = REQUEST) -> bytes:
    """One request on a kept connection; the response head and its short body."""
    await stream.send_all(request)
    head = await read_until(stream, b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    body = head.partition(b"\r\n\r\n")[2]
    while len(body) < length:
        body += await stream.receive_some(65536)
    return head


async def closed_at_once(stream: trio.SocketStream, within: float) -> bool:
    """Whether the gateway closed the connection (without a byte) within `within`."""
    with trio.move_on_after(within):
        try:
            return await stream.receive_some(1) == b""
        except trio.BrokenResourceError:  # closed with the client's bytes unread: a reset
            return True
    return False


async def start_sink(nursery: trio.Nursery) -> int:
    """A TCP upstream for tcp_proxy that holds every connection until the client leaves."""

    async def hold(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while await stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, hold, listeners)
    return int(listeners[0].socket.getsockname()[1])


def flood_config(http_port: int, sink_port: int) -> ConfigBuilder:
    """At most 6 connections in all: HTTP on `edge`, and tcp_proxy on `raw` to the sink."""
    config = proxy_config(http_port)
    config.table("overload", max_downstream_connections=6)
    config.filter_chain("raw", filters=[{"type": "tcp_proxy", "cluster": "sink"}])
    config.cluster("sink", sink_port)
    return config


async def test_connection_flood_past_the_cap_is_refused_while_the_canary_is_served(nursery):
    up = await start_upstream(nursery)
    sink = await start_sink(nursery)
    async with run_gateway(flood_config(up.port, sink)) as gw, httpx.AsyncClient() as client:
        ports = [gw.listener_ports["edge"], gw.listener_ports["raw"]]
        canary = await trio.open_tcp_stream("127.0.0.1", ports[0])
        assert (await exchange(canary)).startswith(b"HTTP/1.1 200")

        # 60 connections, half to the HTTP listener and half to the tcp_proxy one: 5 fit
        # beside the canary under the cap of 6, the other 55 are closed at once.
        flood = [await trio.open_tcp_stream("127.0.0.1", ports[i % 2]) for i in range(60)]
        verdicts: list[bool] = []
        served_during_flood = 0

        async def watch(stream: trio.SocketStream) -> None:
            verdicts.append(await closed_at_once(stream, within=1.0))

        async with trio.open_nursery() as watchers:
            for stream in flood:
                watchers.start_soon(watch, stream)
            while len(verdicts) < len(flood):
                assert (await exchange(canary)).startswith(b"HTTP/1.1 200")
                served_during_flood += 1
        assert verdicts.count(True) == 55 and verdicts.count(False) == 5
        assert served_during_flood > 3
        overflow = [f"listener.{n}.downstream_global_cx_overflow" for n in ("edge", "raw")]
        assert sum(gw.stats.value(name) or 0 for name in overflow) == 55
        assert all(gw.stats.value(name) for name in overflow)  # both listeners count
        assert gw.state.overload.downstream_cx_active == 6

        info = (await client.get(admin_url(gw, "/server_info"))).json()["overload"]
        assert info["max_downstream_connections"] == 6
        assert info["downstream_cx_active"] == 6

        # The flood ends: its connections close, and the next client gets in.
        for stream in flood:
            await stream.aclose()
        await eventually(lambda: gw.state.overload.downstream_cx_active == 1)
        assert (await client.get(url(gw, "/after"))).status_code == 200
        assert (await exchange(canary)).startswith(b"HTTP/1.1 200")
        await canary.aclose()
        assert sum(gw.stats.value(name) or 0 for name in overflow) == 55


def rss_config(http_port: int, log: Path, max_rss: int, actions: dict[str, float]) -> ConfigBuilder:
    """Overload `actions` (name: threshold) at fractions of `max_rss`; `edge` logs each
    request's status and flags to `log`."""
    access_log = {
        "path": str(log),
        "text_format": "%RESPONSE_CODE% %RESPONSE_FLAGS%\n",
        "flush_interval": "0s",
    }
    config = proxy_config(http_port, listener={"access_log": access_log})
    config.table(
        "overload",
        max_rss=max_rss,
        refresh_interval="10s",
        actions=[{"name": name, "threshold": t} for name, t in actions.items()],
    )
    return config


def active(gw: object, action: str) -> int | None:
    return gw.stats.value(f"overload.envoy.overload_actions.{action}.active")  # type: ignore[attr-defined]


async def test_rss_actions_start_and_end_with_max_rss(nursery, tmp_path):
    up = await start_upstream(nursery)
    log = tmp_path / "access.log"
    all_three = {
        "disable_http_keepalive": 0.5,
        "stop_accepting_requests": 0.5,
        "stop_accepting_connections": 0.5,
    }

    def config(max_rss: int, actions: dict[str, float]) -> object:
        return loads_config(rss_config(up.port, log, max_rss, actions).toml())

    # The monitor reads only every 10 s: each step below is a reload, which reads at once.
    async with (
        run_gateway(rss_config(up.port, log, 100 * rss(), all_three)) as gw,
        httpx.AsyncClient() as client,
    ):
        port = gw.listener_ports["edge"]
        canary = await trio.open_tcp_stream("127.0.0.1", port)
        head = await exchange(canary)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
        monitor = next(nodes(await tasks(client, gw), kind="resource monitor"))
        assert monitor["state"] == "normal" and 0 < monitor["rss"] < monitor["max_rss"]

        # Keep-alive off (RSS at about 0.7 of max_rss): HTTP/1.1 responses close their
        # connection; an HTTP/2 connection gets a GOAWAY after its response.
        await gw.reload(
            config(
                int(rss() / 0.7),
                {**all_three, "stop_accepting_requests": 0.9, "stop_accepting_connections": 0.9},
            )
        )
        await eventually(lambda: active(gw, "disable_http_keepalive") == 1)
        assert active(gw, "stop_accepting_requests") == 0
        head = await exchange(canary)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
        assert await closed_at_once(canary, within=1.0)
        h2_conn = await RawH2Client.connect(port)
        stream_id = h2_conn.request("/h2")
        await h2_conn.read_until(lambda e: isinstance(e, h2.events.StreamEnded))
        events = await h2_conn.read_until(lambda e: isinstance(e, h2.events.ConnectionTerminated))
        (goaway,) = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert goaway.error_code == 0 and goaway.last_stream_id >= stream_id
        (response,) = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert dict(response.headers)[b":status"] == b"200"
        await h2_conn.stream.aclose()
        assert gw.stats.value("http.edge.downstream_cx_overload_disable_keepalive") == 2

        # Requests shed (RSS at twice max_rss): 503 OM over HTTP/1.1 and HTTP/2, and not a
        # request reaches the upstream.
        seen = len(up.requests)
        canary = await trio.open_tcp_stream("127.0.0.1", port)
        await gw.reload(config(rss() // 2, {"stop_accepting_requests": 0.5}))
        await eventually(lambda: active(gw, "stop_accepting_requests") == 1)
        assert active(gw, "disable_http_keepalive") == 0
        r = await client.get(url(gw, "/shed"))
        assert (r.status_code, r.text) == (503, "gateway overloaded")
        async with httpx.AsyncClient(http1=False, http2=True) as h2_client:
            assert (await h2_client.get(url(gw, "/shed"))).status_code == 503
        assert (await exchange(canary)).startswith(b"HTTP/1.1 503")
        assert len(up.requests) == seen
        assert gw.stats.value("http.edge.downstream_rq_overload_close") == 3
        assert log.read_text().splitlines()[-3:] == ["503 OM"] * 3

        # Accepts stop: a client already connected is served, a new one waits in the
        # backlog, unanswered, until the action ends.
        await gw.reload(config(rss() // 2, {"stop_accepting_connections": 0.5}))
        await eventually(lambda: active(gw, "stop_accepting_connections") == 1)
        accepted = gw.stats.value("listener.edge.downstream_cx_total")
        waiting = await trio.open_tcp_stream("127.0.0.1", port)
        await waiting.send_all(REQUEST)
        for _ in range(3):
            assert (await exchange(canary)).startswith(b"HTTP/1.1 200")
        with trio.move_on_after(0.5) as unanswered:
            await waiting.receive_some(1)
        assert unanswered.cancelled_caught
        assert gw.stats.value("listener.edge.downstream_cx_total") == accepted
        monitor = next(nodes(await tasks(client, gw), kind="resource monitor"))
        assert monitor["state"] == "overloaded: envoy.overload_actions.stop_accepting_connections"
        info = (await client.get(admin_url(gw, "/server_info"))).json()["overload"]
        assert info["actions"] == {
            "envoy.overload_actions.stop_accepting_connections": {
                "threshold": 0.5,
                "active": True,
            }
        }

        # max_rss back above the RSS: every action ends, the waiting client is served, and
        # keep-alive is back.
        await gw.reload(config(100 * rss(), all_three))
        await eventually(lambda: active(gw, "stop_accepting_connections") == 0)
        head = await read_until(waiting, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        head = await exchange(canary)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
        assert not any(active(gw, a) for a in all_three)
        assert (
            gw.stats.value("overload.envoy.overload_actions.stop_accepting_requests.scale_percent")
            == 0
        )
        await waiting.aclose()
        await canary.aclose()
