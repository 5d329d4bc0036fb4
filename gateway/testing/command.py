"""`gateway test CONFIG SCENARIO...`: each scenario run against the config, its report on
standard output; the exit status says whether every expectation held."""

import json
import sys

import attrs

from gateway.config.model import GatewayConfig
from gateway.errors import ConfigError
from gateway.testing.engine import run_scenario
from gateway.testing.expectations import check_expectations
from gateway.testing.report import render_report, report_data
from gateway.testing.scenario import load_scenario


def run_test_command(
    config: GatewayConfig,
    scenario_paths: list[str],
    *,
    access_log: str | None = None,
    all_stats: bool = False,
    as_json: bool = False,
    seed: int | None = None,
) -> int:
    """Runs every scenario (one that does not load, or does not fit the config, fails);
    0 if all passed, 1 if not. With `as_json`, standard output is one JSON list of the
    scenarios' reports (`report_data`). `seed` replaces every scenario's own."""
    failed = []
    reports = []
    for path in scenario_paths:
        try:
            scenario = load_scenario(path)
            if seed is not None:
                scenario = attrs.evolve(scenario, seed=seed)
            result = run_scenario(config, scenario, access_log=access_log)
        except ConfigError as exc:
            print(f"{path}: {len(exc.errors)} error(s):", file=sys.stderr)
            for error in exc.errors:
                print(f"  {error}", file=sys.stderr)
            failed.append(path)
            continue
        checks = check_expectations(result)
        if as_json:
            reports.append(report_data(result, checks))
        else:
            print(render_report(result, checks, all_stats=all_stats), end="", flush=True)
        if not all(check.passed for check in checks):
            failed.append(path)
    if as_json:
        print(json.dumps(reports, indent=1))
    elif len(scenario_paths) > 1:
        print(f"{len(scenario_paths) - len(failed)} of {len(scenario_paths)} scenarios passed")
    return 1 if failed else 0
