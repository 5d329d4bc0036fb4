"""The shipped example scenarios pass against the configs they were written for, through
the `gateway test` command; its exit status and report."""

import json
import re
from pathlib import Path

import pytest

from gateway import loads_config
from gateway.cli import main
from tests.unit.test_config import docs_example

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "scenarios"


def gateway_test(*args: object) -> int:
    with pytest.raises(SystemExit) as exited:
        main(["test", *map(str, args)])
    assert isinstance(exited.value.code, int)
    return exited.value.code


def test_the_examples_for_gateway_toml_pass(capsys: pytest.CaptureFixture[str]) -> None:
    scenarios = [EXAMPLES / name for name in ("slow_host.toml", "dead_host.toml", "deploy.toml")]
    assert gateway_test(ROOT / "gateway.toml", *scenarios) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert "PASS  status 502 490..510  (was 500)" in out
    reload = f"30.000s  config reloaded from {EXAMPLES / 'gateway_v2.toml'}: cluster api changed"
    assert reload in out
    assert out.endswith("3 of 3 scenarios passed\n")


def test_the_retry_storm_example_passes_and_its_timeline_tells_the_story(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = EXAMPLES / "resilient_gateway.toml"
    assert gateway_test(config, EXAMPLES / "retry_storm.toml") == 0
    out = capsys.readouterr().out
    timeline = out[out.index("timeline:") : out.index("stats (non-zero):")]
    assert "cluster api: host 127.0.0.1:8081 ejected" in timeline
    assert "retry overflows in 20s-60s" in timeline
    assert "cluster api: host 127.0.0.1:8081 returned" in timeline


def test_complete_gateway_toml_is_the_docs_complete_example() -> None:
    text = (ROOT / "examples" / "complete_gateway.toml").read_text(encoding="utf-8")
    assert text == docs_example("# complete: a gateway in front of an API")
    assert set(loads_config(text).clusters) == {"api", "api_canary", "web", "orders_grpc"}


def test_the_examples_for_the_complete_example_pass(capsys: pytest.CaptureFixture[str]) -> None:
    scenarios = sorted(EXAMPLES.glob("complete_*.toml"))
    assert [s.name for s in scenarios] == [
        "complete_api_host_failing.toml",
        "complete_canary.toml",
        "complete_greedy_client.toml",
    ]
    assert gateway_test(ROOT / "examples" / "complete_gateway.toml", *scenarios) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    # The host is well from t=40s, but its ejection only ends at a review of the detector.
    assert re.search(r"\n +20\.1\d\ds  cluster api: host 127\.0\.0\.1:8081 ejected\n", out)
    assert re.search(r"\n +60\.0\d\ds  cluster api: host 127\.0\.0\.1:8081 returned\n", out)
    # The users' retries stay on the one-host canary cluster: its dead phase reaches them.
    assert "PASS  client users: status 503 25..60  (was 42)" in out
    assert "PASS  client greedy: status 429 690..710  (was 701)" in out
    assert out.endswith("3 of 3 scenarios passed\n")


def test_a_failed_expectation_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        'duration = "1s"\n[[clients]]\nrate = 5\n[[clients.requests]]\npath = "/v1/x"\n'
        '[expect.status]\n"200" = 0\n'
    )
    assert gateway_test(ROOT / "gateway.toml", scenario) == 1
    out = capsys.readouterr().out
    assert "FAIL  status 200 0  (was 5)" in out
    assert out.endswith(f"FAILED: {scenario}\n")


def test_a_scenario_that_does_not_load_exits_1_naming_its_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text('duration = "1s"\nclients = 3\n')
    assert gateway_test(ROOT / "gateway.toml", scenario) == 1
    err = capsys.readouterr().err
    assert err == f"{scenario}: 1 error(s):\n  {scenario}: clients: expected a list, got 3\n"


def test_json_reports_for_ci(capsys: pytest.CaptureFixture[str]) -> None:
    scenario = EXAMPLES / "slow_host.toml"
    assert gateway_test("--json", ROOT / "gateway.toml", scenario) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["passed"] is True
    assert report["outcomes"] == {"200": 900, "timeout": 300}
    assert (
        report["hosts"]["127.0.0.1:8081"]["connections"] == 300
    )  # one, then a new one after each cut but the last
    assert report["latency"]["p50"] < 0.05
    assert {e["passed"] for e in report["expectations"]} == {True}
    assert report["stats"]["cluster.api.upstream_rq_2xx"] == 900


def test_another_seed_is_another_run_of_the_same_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "s.toml"
    scenario.write_text(
        'duration = "2s"\n[hosts."127.0.0.1:8080"]\nlatency = { exponential = "20ms" }\n'
        '[[clients]]\nrate = 10\n[[clients.requests]]\npath = "/v1/x"\n'
    )
    runs = []
    for seed in ("1", "2"):
        assert gateway_test("--json", "--seed", seed, ROOT / "gateway.toml", scenario) == 0
        (report,) = json.loads(capsys.readouterr().out)
        runs.append((report["seed"], report["latency"]["max"]))
    assert runs[0][0] == 1 and runs[1][0] == 2
    assert runs[0][1] != runs[1][1]  # the host's exponential draws differ
