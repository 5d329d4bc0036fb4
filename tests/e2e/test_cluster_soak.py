"""A bounded soak: steady load on three hosts while one dies and comes back.

With retries and outlier detection on, clients must see no failure at all: requests caught
on the dying host are retried elsewhere, the dead host is ejected, and once it is back it
returns to the rotation. GATEWAY_SOAK_SECONDS makes the run longer (default 10 s).

The upstreams write each small response in one write, as nginx does. A host killed in the
middle of writing a response body would cut that response, and no proxy can hide a
response that has already started; everything short of that must be hidden.
"""

import os
from functools import partial

import trio

from tests.cluster_helpers import AtomicBackend
from tests.config_builder import proxy_config
from tests.helpers import SteadyLoad, eventually, run_gateway, url

SOAK_SECONDS = float(os.environ.get("GATEWAY_SOAK_SECONDS", "10"))
WORKERS = 8

RETRIES = {
    "retry_policy": {
        "retry_on": ["connect-failure", "reset", "5xx"],
        "num_retries": 3,
        "retry_back_off": {"base_interval": "10ms"},
    }
}
CLUSTER = {
    "outlier_detection": {
        "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": 100,
        "interval": "250ms",
        "base_ejection_time": "1s",
        "max_ejection_percent": 50,
    },
    # Every worker may be retrying at once when the host dies (Envoy's default is 3).
    "circuit_breakers": {"max_retries": 16},
}


async def test_a_host_dies_and_returns_under_load_without_client_errors(nursery):
    backends = [AtomicBackend(name=f"b{i}") for i in range(3)]
    for backend in backends:
        await backend.start(nursery)
    victim = backends[1]
    config = proxy_config(*(b.port for b in backends), catch_all=RETRIES, cluster=CLUSTER)
    load = SteadyLoad()
    async with run_gateway(config) as gw:
        host = gw.clusters.get("backend").hosts[1]

        async with trio.open_nursery() as clients:
            for _ in range(WORKERS):
                clients.start_soon(partial(load.client, url(gw, "/item"), timeout=5))
            await trio.sleep(SOAK_SECONDS / 3)
            victim.kill()
            await eventually(lambda: not host.healthy, timeout=SOAK_SECONDS / 3)
            await trio.sleep(SOAK_SECONDS / 3)
            seen_before_return = victim.served
            await victim.start(nursery)  # same port
            await eventually(lambda: victim.served > seen_before_return, timeout=5)
            clients.cancel_scope.cancel()
        prefix = "cluster.backend"
        assert load.failures == [], load.failures[:3]
        assert load.served > 100
        assert gw.stats.value(f"{prefix}.outlier_detection.ejections_enforced_total") >= 1
        assert gw.stats.value(f"{prefix}.upstream_rq_retry") >= 1
        assert host.healthy
