"""Admin endpoints beyond the basics: usedonly and filtered Prometheus output, counter
resets, listener drain, server_info, secrets redacted from /config_dump, custom histogram
buckets, per-route stats, the stats history, and the loopback rule."""

import logging
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from gateway import loads_config
from gateway.errors import ConfigError
from tests.config_builder import ConfigBuilder, proxy_config
from tests.helpers import admin_url, eventually, run_gateway, start_upstream, url


async def _traffic(gw, client, paths=("/a", "/b", "/c")) -> None:
    for path in paths:
        await client.get(url(gw, path))
    await eventually(lambda: gw.stats.value("http.edge.downstream_rq_total") == len(paths))


async def test_usedonly_filter_and_filtered_prometheus(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        await _traffic(gw, client)
        used = (await client.get(admin_url(gw, "/stats?usedonly"))).text
        names = [line.split(": ")[0] for line in used.splitlines()]
        assert "http.edge.downstream_rq_2xx" in names
        assert "http.edge.downstream_rq_5xx" not in names  # still 0
        assert "cluster.backend.upstream_rq_time" in names  # has samples
        everything = (await client.get(admin_url(gw, "/stats"))).text
        assert "http.edge.downstream_rq_5xx: 0" in everything
        prom = await client.get(admin_url(gw, "/stats/prometheus?filter=^cluster\\.&usedonly"))
        families = {f.name for f in text_string_to_metric_families(prom.text)}
        assert "envoy_cluster_upstream_rq" in families  # the parser drops _total
        assert not any(f.startswith("envoy_http_") for f in families)
        assert "envoy_cluster_upstream_rq_pending_overflow" not in families
        as_json = await client.get(
            admin_url(
                gw, "/stats?format=json&filter=upstream_rq_time$&histogram_buckets=cumulative"
            )
        )
        (hist,) = [s["histogram"] for s in as_json.json()["stats"]]
        assert hist["buckets"][-1]["cumulative_count"] == 3
        assert hist["buckets"][0] == {"upper_bound": 0.5, "cumulative_count": 0}


async def test_reset_counters(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        await _traffic(gw, client)
        assert (await client.get(admin_url(gw, "/reset_counters"))).status_code == 405
        assert (await client.post(admin_url(gw, "/reset_counters"))).text == "OK\n"
        assert gw.stats.value("http.edge.downstream_rq_total") == 0
        assert gw.stats.value("cluster.backend.upstream_rq_2xx") == 0
        # Gauges are state, not history: the open pooled connection is still counted.
        assert gw.stats.value("cluster.backend.upstream_cx_active") == 1
        await _traffic(gw, client, ["/d"])


async def test_drain_listeners_keeps_admin_and_stops_accepting(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        port = gw.listener_ports["edge"]
        assert (await client.post(admin_url(gw, "/drain_listeners?graceful"))).text == "OK\n"
        ready = await client.get(admin_url(gw, "/ready"))
        assert (ready.status_code, ready.text) == (503, "DRAINING\n")
        info = (await client.get(admin_url(gw, "/server_info"))).json()
        assert info["state"] == "DRAINING"
        with trio.fail_after(2):
            while True:
                try:
                    await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()
                except OSError:
                    break  # refused: the listener socket is closed
                await trio.sleep(0.02)
        assert not gw.shutdown_requested.is_set()  # draining is not exiting


async def test_server_info_and_redacted_config_dump(nursery, tmp_path):
    from gateway import open_gateway

    up = await start_upstream(nursery)
    path = tmp_path / "gw.toml"
    path.write_text(proxy_config(up.port).toml())
    config = loads_config(path.read_text())
    async with open_gateway(config, str(path)) as gw, httpx.AsyncClient() as client:
        info = (await client.get(admin_url(gw, "/server_info"))).json()
    assert info["command_line_options"] == {"config_path": str(path), "concurrency": 1}
    assert info["uptime_all_epochs"] == info["uptime_current_epoch"]

    from gateway.admin.views import REDACTED, redact

    dump = {
        "http_filters": {"jwt": {"type": "jwt_authn", "hmac_secret": "k", "issuer": "i"}},
        "listeners": {
            "tls": {
                "filter_chains": [
                    {"tls": {"certificates": [{"certificate_chain": "c.pem", "private_key": "k"}]}}
                ],
                "headers": {"x-api-key": "v", "authorization": "Bearer t", "key": "client_ip"},
            }
        },
    }
    out = redact(dump)
    assert out["http_filters"]["jwt"] == {
        "type": "jwt_authn",
        "hmac_secret": REDACTED,
        "issuer": "i",
    }
    cert = out["listeners"]["tls"]["filter_chains"][0]["tls"]["certificates"][0]
    assert cert == {"certificate_chain": "c.pem", "private_key": REDACTED}
    assert out["listeners"]["tls"]["headers"] == {
        "x-api-key": REDACTED,
        "authorization": REDACTED,
        "key": "client_ip",
    }


async def test_config_dump_redacts_tls_private_keys(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        dump = (await client.get(admin_url(gw, "/config_dump"))).json()
    assert dump["listeners"]["edge"]["access_log"] == []
    assert dump["admin"] == {
        "address": "127.0.0.1:0",
        "allow_non_loopback": False,
        "task_tree": True,
    }


def admin_only(address: str, **keys: Any) -> str:
    """The TOML of a config with only `[admin]`."""
    config = ConfigBuilder()
    config.table("admin", address=address, **keys)
    return config.toml()


def test_admin_must_be_loopback_unless_allowed():
    with pytest.raises(ConfigError) as error:
        loads_config(admin_only("0.0.0.0:9901"))
    assert error.value.errors == [
        "admin.address: must be a loopback address unless allow_non_loopback = true "
        "(the admin endpoint has no authentication), got '0.0.0.0:9901'"
    ]
    for ok in ("127.0.0.2:0", "[::1]:0", "localhost:0"):
        loads_config(admin_only(ok))


async def test_non_loopback_admin_logs_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="gateway.admin"):
        async with run_gateway(admin_only("0.0.0.0:0", allow_non_loopback=True)):
            pass
    assert "reachable beyond this host" in caplog.text


async def test_custom_histogram_buckets_and_per_route_stats(nursery):
    up = await start_upstream(nursery)
    config = proxy_config(up.port, listener={"per_route_stats": True})
    config.server(histogram_buckets=[{"match": "^cluster\\.", "buckets": [2, 2000]}])
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        await _traffic(gw, client, ["/a", "/status/503"])
        await eventually(lambda: gw.stats.value("vhost.main.route.0.upstream_rq_completed") == 2)
        assert gw.stats.value("vhost.main.route.0.upstream_rq_2xx") == 1
        assert gw.stats.value("vhost.main.route.0.upstream_rq_5xx") == 1
        assert gw.stats.histogram("vhost.main.route.0.upstream_rq_time").count == 2
        assert gw.stats.histogram("cluster.backend.upstream_rq_time").bounds == (2, 2000)
        assert gw.stats.histogram("http.edge.downstream_rq_time").bounds[0] == 0.5
        prom = (await client.get(admin_url(gw, "/stats/prometheus"))).text
        families = {f.name: f for f in text_string_to_metric_families(prom)}
        sample = families["envoy_vhost_route_upstream_rq_completed"].samples[0]
        assert sample.labels == {"envoy_virtual_host": "main", "envoy_route": "0"}
        buckets = [
            s for s in families["envoy_cluster_upstream_rq_time"].samples if "le" in s.labels
        ]
        assert [s.labels["le"] for s in buckets] == ["2", "2000", "+Inf"]


async def test_stats_history_has_rate_and_latency_per_cluster(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port)) as gw, httpx.AsyncClient() as client:
        await trio.sleep(1.1)  # two samples, a second apart
        await _traffic(gw, client)
        with trio.fail_after(3):
            while True:
                history = (await client.get(admin_url(gw, "/stats/history"))).json()
                points = history["clusters"]["backend"]
                if any(p["rq_per_s"] > 0 for p in points):
                    break
                await trio.sleep(0.2)
    busy = next(p for p in points if p["rq_per_s"] > 0)
    assert busy["rq_per_s"] == pytest.approx(3, rel=0.2)
    assert busy["latency_p50_ms"] > 0 and busy["latency_p99_ms"] >= busy["latency_p50_ms"]
    assert history["interval_s"] == 1.0
