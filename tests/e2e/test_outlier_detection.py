"""Outlier detection: hosts that keep failing real requests are ejected, then return."""

import httpx
import trio

from tests.cluster_helpers import Backend, spread, start_backends
from tests.config_builder import ConfigBuilder, Table, proxy_config
from tests.helpers import admin_url, eventually, run_gateway, url

OUTLIER = {
    "consecutive_5xx": 3,
    "interval": "100ms",
    "base_ejection_time": "300ms",
    "max_ejection_percent": 50,
}


def outlier_config(backends: list[Backend], outlier: Table) -> ConfigBuilder:
    return proxy_config(*(b.port for b in backends), cluster={"outlier_detection": outlier})


async def test_consecutive_5xx_ejects_and_the_host_returns(nursery):
    b = await start_backends(nursery, 2)
    b[1].always_fail = True
    async with run_gateway(outlier_config(b, OUTLIER)) as gw, httpx.AsyncClient() as client:
        seen = await spread(client, url(gw, "/"), 6)
        assert seen == {"b0": 3, "503": 3}  # round robin until the third 503 ...
        assert await spread(client, url(gw, "/"), 6) == {"b0": 6}  # ... then b1 is out
        stats = "cluster.backend.outlier_detection"
        assert gw.stats.value(f"{stats}.ejections_active") == 1
        assert gw.stats.value(f"{stats}.ejections_enforced_consecutive_5xx") == 1
        text = (await client.get(admin_url(gw, "/clusters"))).text
        assert f"backend::127.0.0.1:{b[1].port}::health_flags::/failed_outlier_check" in text
        body = (await client.get(admin_url(gw, "/clusters?format=json"))).json()
        ejected = body["cluster_statuses"][0]["host_statuses"][1]["outlier_detection"]
        assert ejected == {"ejected": True, "ejections_total": 1}

        b[1].always_fail = False
        host = gw.clusters.get("backend").hosts[1]
        await eventually(lambda: host.healthy)
        assert gw.stats.value(f"{stats}.ejections_active") == 0
        assert await spread(client, url(gw, "/"), 4) == {"b0": 2, "b1": 2}


async def test_connect_failures_count_as_gateway_failures(nursery):
    b = await start_backends(nursery, 2)
    b[1].kill()
    outlier = {
        **OUTLIER,
        "consecutive_gateway_failure": 2,
        "enforcing_consecutive_gateway_failure": 100,
    }
    async with run_gateway(outlier_config(b, outlier)) as gw, httpx.AsyncClient() as client:
        seen = await spread(client, url(gw, "/"), 8)
        assert seen["502"] == 2 and seen["b0"] == 6
        prefix = "cluster.backend.outlier_detection"
        assert gw.stats.value(f"{prefix}.ejections_enforced_consecutive_gateway_failure") == 1


async def test_ejection_time_grows_and_max_ejection_percent_holds(nursery):
    b = await start_backends(nursery, 2)
    for x in b:
        x.always_fail = True
    outlier = {**OUTLIER, "max_ejection_percent": 10, "interval": "250ms"}
    async with run_gateway(outlier_config(b, outlier)) as gw, httpx.AsyncClient() as client:
        await spread(client, url(gw, "/"), 12)
        prefix = "cluster.backend.outlier_detection"
        # One host may always be ejected; a second would exceed 10%.
        assert gw.stats.value(f"{prefix}.ejections_active") == 1
        assert gw.stats.value(f"{prefix}.ejections_overflow") >= 1
        host = next(h for h in gw.clusters.get("backend").hosts if not h.healthy)
        assert host.outlier.num_ejections == 1
        await eventually(lambda: host.healthy)
        # Back but still failing: ejected again, now for twice the base ejection time.
        for _ in range(12):
            if not host.healthy:
                break
            await client.get(url(gw, "/"))
        assert host.outlier.num_ejections == 2
        assert host.outlier.ejected_until is not None
        assert 0.45 < host.outlier.ejected_until - trio.current_time() <= 0.6
