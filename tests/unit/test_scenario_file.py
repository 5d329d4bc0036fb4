"""Scenario files load as the config does: strict, with units, and every error at once,
named by its TOML path; the expectation language's bounds."""

import pytest

from gateway.errors import ConfigError
from gateway.testing.bound import parse_bound
from gateway.testing.scenario import Latency, load_scenario


def test_a_scenario_loads_with_its_shorthands(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        """
duration = "1m"
[hosts."127.0.0.1:8080"]
latency = "20ms"
status = { "200" = 9, "503" = 1 }
[[hosts."127.0.0.1:8080".at]]
time = "30s"
state = "down"
[[clients]]
rate = 5
[expect.status]
"503" = "<= 3"
"""
    )
    scenario = load_scenario(path)
    host = scenario.hosts["127.0.0.1:8080"]
    assert scenario.duration == 60.0
    assert host.latency == Latency(fixed=0.02)
    assert host.status.weights == ((200, 9.0), (503, 1.0))
    assert host.at[0].state == "down"
    assert scenario.expect.status["503"].holds(3) and not scenario.expect.status["503"].holds(4)


def test_every_error_is_named_by_its_toml_path(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        """
duration = "6"
[hosts."127.0.0.1:8080"]
latency = { exponential = "20ms", fixed = "1s" }
status = 700
statu = 1
[[hosts."127.0.0.1:8080".at]]
time = "3s"
state = "dead"
[[clients]]
rate = 100
concurrency = 3
[expect.status]
"200" = ">= x"
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    where = str(path)
    assert caught.value.errors == [
        f"{where}: duration: expected a duration such as '250ms', '1.5s' or '2m', got '6'",
        f'{where}: hosts."127.0.0.1:8080".latency: latency: give exactly one of fixed, '
        "uniform, exponential, lognormal, got ['fixed', 'exponential']",
        f'{where}: hosts."127.0.0.1:8080".status: expected a final status 200-599, got 700',
        f"{where}: hosts.\"127.0.0.1:8080\".at[0].state: expected one of 'up', 'down', "
        "'hang', 'reset', got 'dead'",
        f"{where}: hosts.\"127.0.0.1:8080\": unknown key 'statu' (did you mean 'status'?)",
        f"{where}: clients[0]: client client: give exactly one of rate, concurrency, got "
        "['rate', 'concurrency']",
        f"{where}: expect.status.200: expected a number or a duration such as '30ms', got 'x'",
    ]


def test_the_second_pass_checks_what_types_cannot(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        """
duration = "1s"
[hosts."nowhere"]
[[hosts."127.0.0.1:1".at]]
time = "5s"
[[hosts."127.0.0.1:1".at]]
time = "2s"
[expect.latency]
p999 = "1s"
[expect.access_log]
"(a+" = 1
[expect.clients.web.latency]
median = "1s"
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert [e.removeprefix(f"{path}: ") for e in caught.value.errors] == [
        "hosts.\"nowhere\": expected 'host:port' (or '[::1]:port') with a port 0-65535, "
        "got 'nowhere'",
        'hosts."127.0.0.1:1".at: changes must be in time order, got [5.0, 2.0]',
        "expect.latency.p999: expected p50, p99, p99.9, ..., max or mean",
        "expect.clients.web.latency.median: expected p50, p99, p99.9, ..., max or mean",
        "expect.access_log.\"(a+\": '(a+': missing ): (a+ (RE2 syntax: no backreferences or "
        "lookaround)",
        "expect.clients.web: no client is named 'web'",
        "clients: a scenario needs at least one client",
    ]


def test_grpc_calls_need_an_http2_client(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('duration = "1s"\n[[clients]]\nrate = 1\n[[clients.requests]]\ngrpc = true\n')
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert caught.value.errors == [
        f'{path}: clients[0]: client client: gRPC calls need protocol = "http2"'
    ]


def test_an_http2_clients_bodies_fit_its_first_window(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'duration = "1s"\n[[clients]]\nrate = 1\nprotocol = "http2"\n'
        '[[clients.requests]]\nbody_size = "64KiB"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    assert caught.value.errors == [
        f"{path}: clients[0]: client client: an HTTP/2 client's bodies fit its first window "
        "(65535 bytes)"
    ]


@pytest.mark.parametrize(
    ("text", "inside", "outside"),
    [
        (0, [0], [1]),
        (">= 990", [990, 1000], [989]),
        ("<= 30ms", [0.03, 0.0], [0.031]),
        ("< 5", [4], [5]),
        ("> 0", [1], [0]),
        ("1..5", [1, 3, 5], [0, 6]),
        ("1.5s..2s", [1.5, 2.0], [1.4, 2.1]),
    ],
)
def test_bounds(text, inside, outside):
    bound = parse_bound(text)
    assert all(bound.holds(v) for v in inside)
    assert not any(bound.holds(v) for v in outside)


@pytest.mark.parametrize("text", ["x", "5..1", ">=", True, 1.5, [1]])
def test_bad_bounds_say_what_a_bound_looks_like(text):
    with pytest.raises(ValueError, match="expected"):
        parse_bound(text)
