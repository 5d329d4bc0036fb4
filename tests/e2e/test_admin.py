"""The admin endpoint, served by hypercorn inside the gateway's nursery."""

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.config_builder import proxy_config
from tests.helpers import admin_url, eventually, run_gateway, start_upstream, url


async def _traffic(gw, client) -> None:
    for path in ("/a", "/b", "/c"):
        assert (await client.get(url(gw, path))).status_code == 200
    await eventually(lambda: gw.stats.value("http.edge.downstream_rq_2xx") == 3)


async def test_index_ready_server_info(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        index = await client.get(admin_url(gw, "/"))
        for path in ("/stats", "/clusters", "/tasks", "/config_dump", "/logging"):
            assert f'href="{path}"' in index.text
        ready = await client.get(admin_url(gw, "/ready"))
        assert (ready.status_code, ready.text) == (200, "LIVE\n")
        info = (await client.get(admin_url(gw, "/server_info"))).json()
        assert info["state"] == "LIVE"
        assert info["listeners"] == {"edge": gw.listener_ports["edge"]}
        assert (await client.get(admin_url(gw, "/nope"))).status_code == 404


async def test_stats_text_filter_json_and_histogram(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        await _traffic(gw, client)
        text = (await client.get(admin_url(gw, "/stats"))).text
        lines = dict(line.split(": ", 1) for line in text.splitlines())
        assert lines["http.edge.downstream_rq_total"] == "3"
        assert lines["cluster.backend.upstream_rq_total"] == "3"
        assert lines["cluster.backend.upstream_rq_2xx"] == "3"
        assert lines["listener.edge.downstream_cx_total"] == "1"
        assert lines["cluster.backend.upstream_cx_total"] == "1"
        assert "P50(" in lines["cluster.backend.upstream_rq_time"]
        assert "P99(" in lines["cluster.backend.upstream_rq_time"]
        filtered = (await client.get(admin_url(gw, "/stats?filter=^cluster\\."))).text
        assert filtered and all(line.startswith("cluster.") for line in filtered.splitlines())
        as_json = (await client.get(admin_url(gw, "/stats?format=json"))).json()
        names = {s["name"]: s for s in as_json["stats"]}
        assert names["http.edge.downstream_rq_2xx"]["value"] == 3
        assert names["cluster.backend.upstream_rq_time"]["histogram"]["count"] == 3
        bad = await client.get(admin_url(gw, "/stats?filter=("))
        assert bad.status_code == 400


async def test_prometheus_output_parses(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        await _traffic(gw, client)
        r = await client.get(admin_url(gw, "/stats/prometheus"))
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}
        rq = families["envoy_cluster_upstream_rq"]  # the parser strips _total from counters
        sample = rq.samples[0]
        assert sample.labels == {"envoy_cluster_name": "backend"} and sample.value == 3
        hist = families["envoy_cluster_upstream_rq_time"]
        assert hist.type == "histogram"
        count = [s for s in hist.samples if s.name.endswith("_count")]
        assert count[0].value == 3
        same = (await client.get(admin_url(gw, "/stats?format=prometheus"))).text
        assert "envoy_http_downstream_rq_2xx" in same
        # Every family says what it is and what it counts (Envoy's names, no `_total`
        # added: the parser, which adds it, finds a family for each).
        assert all(f.type != "unknown" and f.documentation for f in families.values())
        assert rq.documentation == "Attempts sent towards a host, each retry counting again."
        names = {line.split()[2] for line in r.text.splitlines() if line.startswith("# TYPE")}
        assert names == {
            line.split()[2] for line in r.text.splitlines() if line.startswith("# HELP")
        }
        assert len(names) == len(families) > 50


async def test_clusters_listeners_config_dump(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        await _traffic(gw, client)
        text = (await client.get(admin_url(gw, "/clusters"))).text
        host = f"backend::127.0.0.1:{up.port}"
        assert f"{host}::rq_total::3" in text
        assert f"{host}::rq_success::3" in text
        assert f"{host}::cx_active::1" in text
        assert f"{host}::health_flags::healthy" in text
        as_json = (await client.get(admin_url(gw, "/clusters?format=json"))).json()
        status = as_json["cluster_statuses"][0]
        assert status["name"] == "backend"
        assert status["host_statuses"][0]["stats"]["rq_total"] == 3
        listeners = (await client.get(admin_url(gw, "/listeners"))).text
        assert listeners == f"edge::127.0.0.1:{gw.listener_ports['edge']}\n"
        dump = (await client.get(admin_url(gw, "/config_dump"))).json()
        assert dump["clusters"]["backend"]["endpoints"] == [f"127.0.0.1:{up.port}"]
        assert dump["listeners"]["edge"]["virtual_hosts"] == ["main"]


async def test_logging_levels_change_live(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        before = (await client.get(admin_url(gw, "/logging"))).text
        assert "gateway.http:" in before
        r = await client.post(admin_url(gw, "/logging?gateway.http=debug"))
        assert "gateway.http: debug" in r.text
        r = await client.post(admin_url(gw, "/logging?level=warning"))
        assert "gateway.http: warning" in r.text
        assert (await client.post(admin_url(gw, "/logging?level=loud"))).status_code == 400
        assert (await client.post(admin_url(gw, "/logging?nope=info"))).status_code == 404


async def test_task_tree_shows_listener_connection_and_stream(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.listener_ports["edge"])
        async with stream:
            await stream.send_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            await eventually(lambda: up.requests)
            tree = (await client.get(admin_url(gw, "/tasks"))).json()
            text = (await client.get(admin_url(gw, "/tasks?format=text"))).text

    def find(node, kind):
        if node.get("kind") == kind:
            yield node
        for child in node.get("children", ()):
            yield from find(child, kind)

    (listener,) = find(tree, "listener")
    assert listener["name"] == "listener edge"
    conns = list(find(listener, "connection"))
    assert len(conns) == 1 and conns[0]["name"].startswith("conn 127.0.0.1:")
    (stream_node,) = find(conns[0], "stream")
    assert stream_node["name"] == "stream 1 GET /hang"
    assert stream_node["state"] == "waiting for upstream response headers"
    assert stream_node["upstream_host"] == f"127.0.0.1:{up.port}"
    assert stream_node["age_s"] >= 0
    assert stream_node["route"] == "main/0"
    assert "(router.py:" in stream_node["awaiting"] or "(upstream_h1.py:" in stream_node["awaiting"]
    assert "[stream] stream 1 GET /hang" in text
    assert "[listener] listener edge" in text


async def test_quitquitquit_requests_shutdown(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        assert (await client.get(admin_url(gw, "/quitquitquit"))).status_code == 405
        r = await client.post(admin_url(gw, "/quitquitquit"))
        assert r.status_code == 200
        with trio.fail_after(1):
            await gw.shutdown_requested.wait()


async def test_task_tree_over_websocket_and_the_tasks_cli(nursery):
    import json as jsonlib
    import sys

    from trio_websocket import open_websocket_url

    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw:
        url_ = f"ws://127.0.0.1:{gw.admin_port}/tasks/ws?interval=100ms"
        async with open_websocket_url(url_) as ws:
            first = jsonlib.loads(await ws.get_message())
            second = jsonlib.loads(await ws.get_message())
        assert second["time"] > first["time"]
        assert "listener edge" in jsonlib.dumps(first["tree"])
        result = await trio.run_process(
            [sys.executable, "-m", "gateway", "tasks", "--admin", f"127.0.0.1:{gw.admin_port}"],
            capture_stdout=True,
            capture_stderr=True,
        )
    out = result.stdout.decode()
    assert "[listener] listener edge" in out
    assert "admin websocket reader" in out  # the CLI's own connection, seen live
