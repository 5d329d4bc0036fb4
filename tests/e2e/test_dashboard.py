"""The admin dashboard in a real browser: headless Chromium loads `/`, runs its JavaScript
against the live admin endpoint, and must render the task tree, the listeners, the
clusters and their hosts' health, and plots with axes; screenshots are kept in tmp_path."""

import contextlib
import re
import shutil

import grpc
import httpx
import pytest
import trio

from gateway.admin.asgi import complete_lifespan
from gateway.server.supervisor import available_cpus
from tests.config_builder import proxy_config
from tests.grpc_echo import echo_config
from tests.helpers import (
    admin_url,
    eventually,
    free_port,
    run_gateway,
    serve_asgi,
    serving,
    start_upstream,
    url,
)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs a Chromium binary: apt-get install chromium"
)


async def _chromium(*args: str) -> str:
    assert CHROMIUM is not None
    result = await trio.run_process(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            *args,
        ],
        capture_stdout=True,
        capture_stderr=True,
    )
    return result.stdout.decode()


async def test_dashboard_renders_tree_and_plots(nursery, tmp_path):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, listener={"per_route_stats": True})
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        for _ in range(12):  # traffic spread over more than one history sample
            assert (await client.get(url(gw, "/x"))).status_code == 200
            await trio.sleep(0.1)
        slow = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with slow:
            await slow.send_all(b"GET /hang?token=secret HTTP/1.1\r\nHost: x\r\n\r\n")
            await eventually(lambda: up.requests and up.requests[-1].path.startswith("/hang"))
            dom = await _chromium("--dump-dom", admin_url(gw, "/"))
            shot = tmp_path / "dashboard.png"
            await _chromium("--window-size=1280,1400", f"--screenshot={shot}", admin_url(gw, "/"))

    tree = dom[dom.index('id="tree"') :]
    assert re.match(r'id="tree" data-updated="[\d.]+"', tree), "the WebSocket tree arrived"
    assert "listener edge" in tree and "stream 1 GET /hang?[redacted]" in tree
    assert "secret" not in dom
    assert "waiting for upstream response headers" in tree
    assert re.search(r"""<button onclick="cancelTask\('\d+'\)">cancel #\d+</button>""", tree)
    assert f"127.0.0.1:{gw.listener_ports['edge']}" in dom  # the listeners table
    assert re.search(rf'127\.0\.0\.1:{up.port} <span class="health HEALTHY">HEALTHY</span>', dom)
    plot = dom[dom.index('data-cluster="backend"') :]
    rate = re.search(r'<polyline class="rate" points="([^"]*)"', plot)
    assert rate and len(rate[1].split()) >= 1, "the request-rate plot has points"
    p50 = re.search(r'<polyline class="p50" points="([^"]*)"', plot)
    assert p50 and p50[1], "the latency plot has points"
    assert "http.edge.downstream_rq_2xx" in dom  # top stats
    # The plots have axes: a y axis labelled with its unit, an x axis with clock times.
    assert re.search(r'<text class="unit"[^>]*>requests/s</text>', plot)
    assert re.search(r'<text class="unit"[^>]*>latency ms</text>', plot)
    assert re.search(r'<text class="xtick"[^>]*>\d\d:\d\d:\d\d</text>', plot)
    # The listener's responses by status class: a rate of 2xx, none of 5xx.
    edge = re.search(r'<tr class="listener"><td>edge</td><td>[^<]*</td>(.*?)</tr>', dom)
    assert edge, "the listeners table"
    rates = re.findall(r'<td class="num">([^<]*)</td>', edge[1])
    assert float(rates[0]) > 0 and rates[1:] == ["0", "0", "0"]  # 2xx, 3xx, 4xx, 5xx
    host = re.search(r'<tr class="host HEALTHY cluster" data-host="[^"]+">(.*?)</tr>', dom)
    assert host and '<td class="num">100%</td>' in host[1], "the host's success rate"
    assert 'admin  <span class="muted admin-folded">(the admin endpoint\'s own' in tree
    assert "[admin]</span> hypercorn" not in tree, "the admin's own tasks are folded"
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000


async def test_dashboard_shows_grpc_calls_per_method(echo_server):
    """The grpc_stats filter's counts as a table: a row per method with its own stats and
    one for the cluster's other calls, with calls, failures, statuses and messages."""
    port, _ = echo_server
    config = echo_config(port)
    config.listener("edge", http_filters=["grpc"])
    allowlist = {"services": [{"name": "test.Echo", "method_names": ["Unary"]}]}
    config.http_filter("grpc", "grpc_stats", individual_method_stats_allowlist=allowlist)
    async with run_gateway(config) as gw:
        with grpc.insecure_channel(f"127.0.0.1:{gw.listener_ports['edge']}") as channel:

            def calls() -> None:
                unary = channel.unary_unary("/test.Echo/Unary")
                for request in (b"a", b"b", b"c", b"fail"):
                    with contextlib.suppress(grpc.RpcError):
                        unary(request, timeout=5)
                with contextlib.suppress(grpc.RpcError):
                    channel.unary_unary("/test.Echo/Missing")(b"x", timeout=5)

            await trio.to_thread.run_sync(calls)
        await eventually(lambda: gw.stats.value("cluster.echo.grpc.total") == 1)
        dom = await _chromium("--dump-dom", admin_url(gw, "/"))
    rows = re.findall(r'<tr class="grpc-method">(.*?)</tr>', dom)
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    assert [row[:2] + row[3:] for row in cells] == [
        ["echo", "test.Echo/Unary", "4", "1", "OK 3, INVALID_ARGUMENT 1", "4 / 3"],
        ["echo", '<span class="muted">other calls</span>', "1", "1", "UNIMPLEMENTED 1", "1 / 0"],
    ]
    assert all(re.fullmatch(r"\d+\.\d|-", row[2]) for row in cells), "calls/s"


@pytest.mark.skipif(available_cpus() < 2, reason="one CPU: the default is one process")
async def test_dashboard_of_the_default_gateway_shows_every_worker(nursery, tmp_path):
    """`gateway serve` with the default workers ("auto": 2 on the test machine): the page
    is the supervisor's, its tree has a node per worker and task ids of the form W.ID."""
    up = await start_upstream(nursery)
    config = tmp_path / "g.toml"
    config.write_text(proxy_config(up.port).toml())
    async with (
        serving(config, "gateway.workers: gateway started") as served,
        httpx.AsyncClient() as client,
    ):
        admin = f"http://127.0.0.1:{served.line.split('admin ')[1].split(',')[0]}"
        for _ in range(24):  # new connections, so both workers serve some
            async with httpx.AsyncClient() as one_shot:
                response = await one_shot.get(f"http://127.0.0.1:{served.port}/x")
                assert response.status_code == 200
            await trio.sleep(0.05)
        slow = await trio.open_tcp_stream("127.0.0.1", served.port)
        async with slow:
            await slow.send_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            await eventually(lambda: up.requests and up.requests[-1].path == "/hang")
            dom = await _chromium("--dump-dom", f"{admin}/")
        info = (await client.get(f"{admin}/server_info")).json()
    tree = dom[dom.index('id="tree"') :]
    assert re.match(r'id="tree" data-updated="[\d.]+"', tree), "the WebSocket tree arrived"
    assert "[supervisor]</span> supervisor" in tree
    assert "[worker]</span> worker 0" in tree and "[worker]</span> worker 1" in tree
    assert re.search(r"""<button onclick="cancelTask\('[01]\.\d+'\)">cancel #[01]\.\d+<""", tree)
    assert f"version {info['version']} · LIVE" in dom  # the server line
    assert re.search(rf'127\.0\.0\.1:{up.port} <span class="health HEALTHY">HEALTHY</span>', dom)
    assert re.search(r'<polyline class="rate" points="[^"]+"', dom), "a request-rate plot"
    assert "http.edge.downstream_rq_2xx" in dom  # top stats
    # Rates from the workers' histories added up: the host's, the listener's 2xx.
    host = re.search(r'<tr class="host HEALTHY cluster" data-host="[^"]+">(.*?)</tr>', dom)
    assert host, "the host's row"
    rq_per_s, errors, _, success = re.findall(r'<td class="num">([^<]*)</td>', host[1])[:4]
    assert float(rq_per_s) > 0 and errors == "0" and success == "100%"
    edge = re.search(r'<tr class="listener"><td>edge</td><td>[^<]*</td>(.*?)</tr>', dom)
    assert edge and float(re.findall(r'<td class="num">([^<]*)</td>', edge[1])[0]) > 0
    folded = tree[: tree.index("</div>")].count("(the admin endpoint's own")
    assert folded == 2, "each worker's admin, folded"


async def test_dashboard_shows_a_dead_host_as_failing(tmp_path):
    """A cluster whose one endpoint nobody listens on, no health check: every request fails
    to connect, and the page says so in red rather than showing a HEALTHY host."""
    dead = f"127.0.0.1:{free_port()}"
    async with run_gateway(proxy_config(dead)) as gw, httpx.AsyncClient() as client:
        for _ in range(29):
            assert (await client.get(url(gw, "/x"))).status_code == 502
        # The history samples each second: the failures are in it after the next sample.
        with trio.fail_after(5):
            while True:
                history = (await client.get(admin_url(gw, "/stats/history"))).json()
                if sum(p["rq_total"] for p in history["hosts"]["backend"][dead]) == 29:
                    break
                await trio.sleep(0.2)
        dom = await _chromium("--dump-dom", admin_url(gw, "/"))
        shot = tmp_path / "dead_host.png"
        await _chromium("--window-size=1400,1000", f"--screenshot={shot}", admin_url(gw, "/"))
    row = re.search(rf'<tr class="host FAILING cluster" data-host="{dead}">(.*?)</tr>', dom)
    assert row, "the dead host's row is FAILING"
    assert f'{dead} <span class="health FAILING">FAILING</span>' in row[1]
    assert "failing: 29/29 connect failures in the last minute" in row[1]
    assert '<td class="num">0%</td>' in row[1]  # success rate
    assert "HEALTHY" not in row[1]
    edge = re.search(r'<tr class="listener"><td>edge</td><td>[^<]*</td>(.*?)</tr>', dom)
    assert edge and float(re.findall(r'<td class="num">([^<]*)</td>', edge[1])[3]) > 0, "5xx/s"
    assert shot.read_bytes().startswith(b"\x89PNG")


async def test_dashboard_task_tree_filter(nursery, tmp_path):
    """The tree's filter, from the page's own query: `/?state=waiting` shows the waiting
    stream and the nodes that lead to it, not the cluster's tasks nor the admin's;
    `admin_tasks=show` unfolds the admin endpoint's own tasks."""
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        slow = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with slow:
            await slow.send_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            await eventually(lambda: up.requests and up.requests[-1].path == "/hang")
            waiting = await _chromium("--dump-dom", admin_url(gw, "/?state=waiting"))
            nothing = await _chromium("--dump-dom", admin_url(gw, "/?listener=nope"))
            everything = await _chromium("--dump-dom", admin_url(gw, "/?admin_tasks=show"))
            shot = tmp_path / "tree_filter.png"
            await _chromium(
                "--window-size=1400,1600", f"--screenshot={shot}", admin_url(gw, "/?state=waiting")
            )

    def tree_of(dom: str) -> str:
        tree = dom[dom.index('id="tree"') :]
        return tree[: tree.index("</div>")]

    tree = tree_of(waiting)
    assert "(live, oldest first; state waiting)" in waiting
    assert "stream 1 GET /hang" in tree and "listener edge" in tree
    assert "cluster backend" not in tree and "admin" not in tree
    tree = tree_of(nothing)
    assert "listener edge" not in tree and "stream 1" not in tree
    tree = tree_of(everything)
    assert "[admin]</span> hypercorn" in tree and "folded)" not in tree
    # Unfolded, the admin's tasks still come after the gateway's own.
    assert tree.index("listener edge") < tree.index("[admin]</span> hypercorn")
    assert shot.read_bytes().startswith(b"\x89PNG")


def _page(html: str):
    """An ASGI app serving one HTML page: another site, as far as the browser knows."""

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
            return
        headers = [(b"content-type", b"text/html; charset=utf-8")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": html.encode()})

    return app


async def test_a_page_from_another_origin_cannot_drive_the_admin(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        admin = f"127.0.0.1:{gw.admin_port}"
        evil = await serve_asgi(
            nursery,
            _page(f"""<!doctype html><body><div id="ws">pending</div><script>
fetch("http://{admin}/quitquitquit", {{method: "POST", mode: "no-cors"}});
const ws = new WebSocket("ws://{admin}/tasks/ws");
ws.onmessage = (e) => {{ document.getElementById("ws").textContent = "read " + e.data; }};
ws.onerror = () => {{ document.getElementById("ws").textContent = "refused"; }};
</script></body>"""),
        )
        for _ in range(3):
            # The page is dumped when Chromium's virtual time runs out, which a loaded
            # machine can reach before the refused handshake's error event: load it again.
            dom = await _chromium("--dump-dom", f"http://127.0.0.1:{evil}/")
            if '<div id="ws">pending</div>' not in dom:
                break
        assert '<div id="ws">refused</div>' in dom
        # Each load is refused twice: the POST and the WebSocket handshake.
        await eventually(lambda: gw.stats.value("admin.rq_refused") >= 2)
        assert not gw.shutdown_requested.is_set()
        assert (await client.get(url(gw, "/after"))).status_code == 200
