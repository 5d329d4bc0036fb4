"""Operator and admin regexes run in linear time: a pattern that makes a backtracking engine
take seconds costs a bystander nothing (RE2, gateway/config/regex.py)."""

import time
from functools import partial

import httpx
import trio

from tests.config_builder import proxy_config, route
from tests.helpers import (
    SteadyLoad,
    admin_url,
    run_gateway,
    start_upstream,
    url,
)

#: Python's `re` needs ~2^n steps to fail this against n a's: 11.8 s for the 36-byte path.
CATASTROPHIC_ROUTE = route(
    match={"regex": "/api/(a+)+/x"},
    direct_response={"status": 200, "body": "never: the path does not end in /x"},
)
ATTACK_PATH = "/api/" + "a" * 29 + "/y"
#: What a bystander may feel: far below the seconds a backtracking match took.
CANARY_BOUND = 0.5


async def test_catastrophic_route_regex_fails_fast_and_canary_is_unharmed(nursery):
    assert len(ATTACK_PATH) == 36
    upstream = await start_upstream(nursery)
    async with run_gateway(proxy_config(upstream.port, routes=[CATASTROPHIC_ROUTE])) as gw:
        canary = SteadyLoad()
        async with trio.open_nursery() as clients, httpx.AsyncClient(timeout=30) as attacker:
            clients.start_soon(partial(canary.client, url(gw, "/canary"), timeout=30))
            await canary.until_served(20)
            for _ in range(3):
                start = time.monotonic()
                response = await attacker.get(url(gw, ATTACK_PATH))
                elapsed = time.monotonic() - start
                # The regex route does not match; the catch-all route proxies it.
                assert response.status_code == 200
                assert response.json()["path"] == ATTACK_PATH
                assert elapsed < CANARY_BOUND, elapsed
            await canary.until_served(20)
            clients.cancel_scope.cancel()
    assert canary.failures == []
    assert canary.slowest < CANARY_BOUND, canary.slowest


async def test_admin_stats_filter_regex_is_linear_too(nursery):
    """An admin caller's filter runs against every stat name; `(\\w+)+X$` backtracks
    exponentially in each long word of them (`upstream_cx_destroy_local_with_active_rq`)."""
    upstream = await start_upstream(nursery)
    async with run_gateway(proxy_config(upstream.port)) as gw:
        longest_word = max(len(w) for s in gw.stats for w in s.name.split("."))
        assert longest_word >= 30
        canary = SteadyLoad()
        async with trio.open_nursery() as clients, httpx.AsyncClient(timeout=30) as admin:
            clients.start_soon(partial(canary.client, url(gw, "/canary"), timeout=30))
            await canary.until_served(20)
            start = time.monotonic()
            response = await admin.get(admin_url(gw, "/stats"), params={"filter": r"(\w+)+X$"})
            elapsed = time.monotonic() - start
            assert response.status_code == 200 and response.text.strip() == ""
            assert elapsed < CANARY_BOUND, elapsed
            found = await admin.get(admin_url(gw, "/stats"), params={"filter": r"rq_(\w+)+l$"})
            assert "cluster.backend.upstream_rq_total:" in found.text
            refused = await admin.get(admin_url(gw, "/stats"), params={"filter": r"(a)\1"})
            assert refused.status_code == 400
            assert "no backreferences" in refused.text
            await canary.until_served(20)
            clients.cancel_scope.cancel()
    assert canary.failures == []
    assert canary.slowest < CANARY_BOUND, canary.slowest
