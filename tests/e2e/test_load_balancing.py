"""Load balancing policies against real upstreams: who gets which request."""

import gc
import time

import httpx
import trio

from gateway.clusters.host import HealthFlag
from tests.cluster_helpers import Backend, spread, start_backends
from tests.config_builder import ConfigBuilder, Table, local, proxy_config, route
from tests.helpers import eventually, run_gateway, url


async def test_round_robin_honours_weights_smoothly(nursery):
    b = await start_backends(nursery, 3)
    endpoints = [{"address": local(b[0].port), "weight": 3}, b[1].port, b[2].port]
    async with run_gateway(proxy_config(*endpoints)) as gw, httpx.AsyncClient() as client:
        servers = []
        for _ in range(10):
            servers.append((await client.get(url(gw, "/"))).json()["server"])
        assert servers.count("b0") == 6 and servers.count("b1") == 2 and servers.count("b2") == 2
        # Smooth: the heavy host never takes more than two turns in a row.
        assert "b0,b0,b0" not in ",".join(servers + servers)


async def test_random_spreads_by_weight(nursery):
    b = await start_backends(nursery, 2)
    endpoints = [{"address": local(b[0].port), "weight": 4}, b[1].port]
    async with (
        run_gateway(proxy_config(*endpoints, cluster={"lb_policy": "random"})) as gw,
        httpx.AsyncClient() as client,
    ):
        seen = await spread(client, url(gw, "/"), 200)
    assert seen["b0"] + seen["b1"] == 200
    assert 120 <= seen["b0"] <= 190  # expected 160


async def test_least_request_avoids_the_busy_host(nursery):
    b = await start_backends(nursery, 2)
    b[0].hang = True
    config = proxy_config(*(x.port for x in b), cluster={"lb_policy": "least_request"})
    async with (
        run_gateway(config) as gw,
        httpx.AsyncClient(timeout=5) as client,
        trio.open_nursery() as hangers,
    ):
        for _ in range(4):
            hangers.start_soon(client.get, url(gw, "/hang"))
        # b0 holds the ones it got; b1 answered its share at once. Wait until all four
        # reached a backend: one still on its way to b0 would be answered once b0 stops
        # hanging, and b0 would look idle.
        host0, host1 = gw.clusters.get("backend").hosts
        await eventually(
            lambda: (
                len(b[0].seen) + len(b[1].seen) == 4
                and host0.stats.rq_active == len(b[0].seen) >= 1
                and host1.stats.rq_active == 0
            )
        )
        b[0].hang = False
        seen = await spread(client, url(gw, "/"), 20)
        hangers.cancel_scope.cancel()
    # b0 is busier every time: least_request (two choices of two) always picks b1.
    assert seen == {"b1": 20}


def hashed_config(backends: list[Backend], lb_policy: str, hash_policy: Table) -> ConfigBuilder:
    """Cluster `backend` balances with `lb_policy` on what the route's `hash_policy` hashes."""
    return proxy_config(
        *(b.port for b in backends),
        catch_all={"hash_policy": [hash_policy]},
        cluster={"lb_policy": lb_policy},
    )


async def test_ring_hash_keeps_a_key_on_one_host_and_remaps_few(nursery):
    b = await start_backends(nursery, 3)
    config = hashed_config(b, "ring_hash", {"header": "x-user"})
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        owners = {}
        for user in range(30):
            seen = await spread(client, url(gw, "/"), 3, headers={"x-user": f"u{user}"})
            assert len(seen) == 1, f"u{user} went to {seen}"
            owners[user] = next(iter(seen))
        assert len(set(owners.values())) == 3
        # b2 leaves the usable set, as a failed health check would take it out.
        cluster = gw.clusters.get("backend")
        cluster.set_health_flag(cluster.hosts[2], HealthFlag.FAILED_ACTIVE_HC, True)
        for user, owner in owners.items():
            seen = await spread(client, url(gw, "/"), 1, headers={"x-user": f"u{user}"})
            if owner != "b2":
                assert seen == {owner: 1}, "a key whose host stayed must not move"


async def test_maglev_hashes_the_source_ip(nursery):
    b = await start_backends(nursery, 3)
    async with (
        run_gateway(hashed_config(b, "maglev", {"source_ip": True})) as gw,
        httpx.AsyncClient() as client,
    ):
        seen = await spread(client, url(gw, "/"), 20)
    assert len(seen) == 1  # one client address: one host


async def test_cookie_hash_policy(nursery):
    b = await start_backends(nursery, 3)
    config = hashed_config(b, "ring_hash", {"cookie": "session"})
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        owners = set()
        for session in range(12):
            headers = {"cookie": f"theme=dark; session=s{session}"}
            seen = await spread(client, url(gw, "/"), 3, headers=headers)
            assert len(seen) == 1
            owners |= set(seen)
    assert len(owners) > 1


class LongestStep(trio.abc.Instrument):
    """The longest a task ran without yielding: how long the event loop was stalled."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.longest = 0.0
        self.task = ""

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.started = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.started is not None:  # (not the step that added the instrument)
            took = time.perf_counter() - self.started
            if took > self.longest:
                self.longest, self.task = took, task.name


async def test_a_flapping_host_does_not_stall_the_worker_with_table_rebuilds(nursery):
    """A maglev table of 65,537 slots takes tens of ms of Python to build, and a host whose
    health flaps forces a new one each time: built at once on the event loop, it stalled
    every other request for that long. It is built in slices, at most every 0.5 s, while
    requests keep the previous table."""
    b = await start_backends(nursery, 3)
    check = {
        "type": "http",
        "path": "/healthz",
        "interval": "30ms",
        "timeout": "500ms",
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
    }
    config = hashed_config(b[:2], "maglev", {"header": "x-user"})
    config.cluster("backend", health_checks=[check])
    config.routes().insert(0, route("/canary", cluster="canary"))
    config.cluster("canary", b[2].port)
    steps = LongestStep()
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:

        async def flap() -> None:
            while True:
                b[1].healthy = not b[1].healthy
                await trio.sleep(0.1)

        async def hashed_load() -> None:  # each request may meet a stale table
            while True:
                r = await client.get(url(gw, "/"), headers={"x-user": "u"})
                assert r.status_code == 200, r.text

        async with trio.open_nursery() as load:
            load.start_soon(flap)
            load.start_soon(hashed_load)
            await trio.sleep(0.3)
            # A collection of this test process's heap would be a stall of its own.
            gc.collect()
            gc.disable()
            trio.lowlevel.add_instrument(steps)
            try:
                for _ in range(20):
                    assert (await client.get(url(gw, "/canary"))).status_code == 200
                    await trio.sleep(0.05)
            finally:
                trio.lowlevel.remove_instrument(steps)
                gc.enable()
            load.cancel_scope.cancel()
        changes = gw.stats.value("cluster.backend.health_check.changed")
    assert changes >= 10, "the host did not flap"
    assert steps.longest < 0.03, f"{steps.task!r} stalled the loop for {steps.longest:.3f} s"
