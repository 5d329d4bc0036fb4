"""The pytest plugin: its fixtures, used by a test suite of its own (run in a pytest of
its own, with plugin autoloading off, so that the plugin is loaded by name whether or not
this checkout's entry point is installed)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import tomli

ROOT = Path(__file__).resolve().parents[2]

SUITE = '''
from pathlib import Path

import pytest
import trio

from gateway.testing.plugin import ScenarioFailed

CONFIG = """
[listeners.edge]
address = "127.0.0.1:10000"
virtual_hosts = ["api"]
[virtual_hosts.api]
domains = ["*"]
[[virtual_hosts.api.routes]]
match = { prefix = "/" }
cluster = "api"
timeout = "2s"
[clusters.api]
endpoints = ["10.1.0.1:80"]
"""


def test_a_scenario_that_holds(gateway_scenario):
    result = gateway_scenario.check(
        CONFIG,
        {"duration": "5s", "clients": [{"rate": 2}], "expect": {"status": {"200": 10}}},
    )
    assert len(result.outcomes) == 10


def test_a_scenario_that_does_not_hold_fails_with_its_report(gateway_scenario):
    with pytest.raises(ScenarioFailed, match="FAIL  status 200 0  \\\\(was 10\\\\)"):
        gateway_scenario.check(
            CONFIG,
            {"duration": "5s", "clients": [{"rate": 2}], "expect": {"status": {"200": 0}}},
        )


FILTERED = """virtual_hosts = ["api"]
http_filters = ["tenant"]
[http_filters.tenant]
type = "python"
module = "ADD_TENANT_PY:AddTenant"
config = { tenants = { acme = "t-001" } }
"""


def test_a_python_filter_in_virtual_time(gateway_scenario):
    config = CONFIG.replace('virtual_hosts = ["api"]', FILTERED)
    scenario = {
        "duration": "10s",
        "clients": [
            {
                "rate": 10,
                "requests": [
                    {"authority": "acme.example.com", "weight": 3},
                    {"authority": "initech.example.com", "weight": 1},
                ],
            }
        ],
        "expect": {"status": {"200": "> 60", "404": "> 10", "5xx": 0}},
    }
    result = gateway_scenario.check(config, scenario)
    # The filter answered the unknown tenant itself: only acme's requests went upstream.
    assert sum(result.hosts["10.1.0.1:80"].served.values()) == sum(
        1 for o in result.outcomes if o.result == "200"
    )


@pytest.mark.trio
async def test_route_timeout(gateway_simulation, autojump_clock):  # as docs/testing.md
    config = Path("GATEWAY_TOML")
    async with gateway_simulation(config, {"127.0.0.1:8081": {"state": "hang"}}) as sim:
        statuses = [await sim.request("/v1/x") for _ in range(2)]  # round robin: one each
        assert sorted(statuses) == [200, 504]  # the hanging host's after the route timeout
        assert sim.gateway.stat("cluster.api.upstream_rq_timeout") == 1


@pytest.mark.trio
async def test_a_simulation_in_the_tests_own_virtual_time(gateway_simulation, autojump_clock):
    hosts = {"10.1.0.1:80": {"state": "hang"}}
    async with gateway_simulation(CONFIG, hosts) as sim:
        start = trio.current_time()
        assert await sim.request("/slow") == 504
        assert trio.current_time() - start == pytest.approx(2.0)  # the route timeout
        assert sim.gateway.stat("cluster.api.upstream_rq_timeout") == 1


@pytest.mark.trio
async def test_a_hot_reload_in_the_tests_own_run(gateway_simulation, autojump_clock):
    from gateway import loads_config

    v2 = loads_config(CONFIG.replace('"10.1.0.1:80"', '"10.1.0.2:80"'))
    async with gateway_simulation(CONFIG, {"10.1.0.2:80": {"status": 503}}, later=[v2]) as sim:
        assert await sim.request("/") == 200
        assert await sim.reload(v2) == ["cluster api changed"]
        assert await sim.request("/") == 503  # version 2's host
        assert [e.kind for e in sim.events if e.kind == "reload"] == ["reload"]
'''


def test_the_fixtures_in_a_suite_of_their_own(tmp_path):
    suite = SUITE.replace("ADD_TENANT_PY", str(ROOT / "examples" / "filters" / "add_tenant.py"))
    suite = suite.replace("GATEWAY_TOML", str(ROOT / "gateway.toml"))
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(suite))
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONPATH": str(ROOT)}
    plugins = ["-p", "gateway.testing.plugin", "-p", "pytest_trio.plugin"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *plugins, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "6 passed" in run.stdout


def test_the_plugin_is_registered_for_pytest():
    pyproject = tomli.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {"gateway": "gateway.testing.plugin"}
