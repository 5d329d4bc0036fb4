"""The pytest plugin `gateway.testing` (entry point `pytest11: gateway`): the scenario
engine as fixtures, so an operator's test suite can check its config, and a filter's
author the filter, in virtual time.

- `gateway_scenario`: runs a scenario (a file, or a dict as its TOML would be) against a
  config (a file, TOML text, or a GatewayConfig); `check` fails the test with the full
  report when an expectation does not hold.
- `gateway_simulation`: opens a `Simulation` in the test's own trio run (pytest-trio),
  with scripted hosts; the test sends its requests with `Simulation.request`. With
  pytest-trio's `autojump_clock` fixture it runs in virtual time.
"""

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from gateway.config.load import load_config, loads_config
from gateway.config.model import GatewayConfig
from gateway.testing.engine import run_scenario
from gateway.testing.expectations import check_expectations
from gateway.testing.report import render_report
from gateway.testing.result import ScenarioResult
from gateway.testing.scenario import Scenario, load_scenario, structure_hosts, structure_scenario
from gateway.testing.simulation import Simulation, open_simulation

ConfigSource = GatewayConfig | Path | str
ScenarioSource = Scenario | Path | Mapping[str, Any]


class ScenarioFailed(AssertionError):
    """An expectation did not hold; the message is the scenario's report."""


def as_config(config: ConfigSource) -> GatewayConfig:
    """A config from a GatewayConfig, a file (Path) or TOML text (str)."""
    if isinstance(config, GatewayConfig):
        return config
    if isinstance(config, Path):
        return load_config(config)
    return loads_config(config)


def as_scenario(scenario: ScenarioSource) -> Scenario:
    """A scenario from a Scenario, a file (Path) or its data (a dict as its TOML)."""
    if isinstance(scenario, Scenario):
        return scenario
    if isinstance(scenario, Path):
        return load_scenario(scenario)
    return structure_scenario(dict(scenario), "<test scenario>")


class ScenarioRunner:
    def run(self, config: ConfigSource, scenario: ScenarioSource) -> ScenarioResult:
        """Runs the scenario in virtual time (its own trio run: call it from a sync test)."""
        return run_scenario(as_config(config), as_scenario(scenario))

    def check(self, config: ConfigSource, scenario: ScenarioSource) -> ScenarioResult:
        """Runs it, and fails the test with the report if an expectation did not hold."""
        result = self.run(config, scenario)
        checks = check_expectations(result)
        if not all(check.passed for check in checks):
            raise ScenarioFailed("\n" + render_report(result, checks))
        return result


SimulationOpener = Callable[..., AbstractAsyncContextManager[Simulation]]


def _open(
    config: ConfigSource,
    hosts: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    seed: int = 0,
    later: Sequence[GatewayConfig] = (),
) -> AbstractAsyncContextManager[Simulation]:
    return open_simulation(as_config(config), structure_hosts(hosts or {}), seed=seed, later=later)


@pytest.fixture
def gateway_scenario() -> ScenarioRunner:
    """Runs scenarios against configs: `gateway_scenario.check(config, scenario)`."""
    return ScenarioRunner()


@pytest.fixture
def gateway_simulation() -> SimulationOpener:
    """`async with gateway_simulation(config, {"10.0.0.1:80": {"latency": "20ms"}}) as
    sim: status = await sim.request("/path")`, in the test's trio run; `await
    sim.reload(new_config)` hot-reloads it (pass `later=[new_config]` for hosts at the
    new config's endpoints)."""
    return _open
