"""The scenario engine (`gateway test`): the gateway's own code against scripted hosts and
clients in virtual time. Each test runs a small scenario (a few virtual seconds to a few
virtual minutes) and checks what the clients, hosts and timeline saw."""

import collections

import pytest

from gateway import loads_config
from gateway.errors import ConfigError
from gateway.testing.engine import run_scenario
from gateway.testing.expectations import check_expectations
from gateway.testing.result import ScenarioResult
from gateway.testing.scenario import structure_scenario

CONFIG = """
[listeners.edge]
address = "127.0.0.1:10000"
virtual_hosts = ["api"]

[virtual_hosts.api]
domains = ["*"]

[[virtual_hosts.api.routes]]
match = { prefix = "/retry/" }
cluster = "api"
timeout = "5s"
retry_policy = { retry_on = ["5xx", "connect-failure", "reset"], num_retries = 2 }

[[virtual_hosts.api.routes]]
match = { prefix = "/" }
cluster = "api"
timeout = "3s"

[clusters.api]
endpoints = ["10.1.0.1:80", "10.1.0.2:80"]
connect_timeout = "1s"
"""


def run(scenario: dict[str, object], config: str = CONFIG) -> ScenarioResult:
    return run_scenario(loads_config(config), structure_scenario(scenario, "test.toml"))


def statuses(result: ScenarioResult) -> dict[str, int]:
    return dict(collections.Counter(o.result for o in result.outcomes))


def client(**settings: object) -> dict[str, object]:
    return {"rate": 10, "requests": [{"path": "/x"}], **settings}


def test_latency_is_virtual_and_as_scripted():
    result = run(
        {
            "duration": "10s",
            "hosts": {"10.1.0.1:80": {"latency": "250ms"}, "10.1.0.2:80": {"latency": "250ms"}},
            "clients": [client()],
        }
    )
    assert statuses(result) == {"200": 100}
    # What the clients saw is the hosts' think time: the proxy's own CPU time is not
    # virtual time.
    assert {round(o.latency or 0, 6) for o in result.outcomes} == {0.25}
    assert result.wall_seconds < result.virtual_seconds


def test_a_hanging_host_meets_the_route_timeout():
    result = run(
        {
            "duration": "10s",
            "hosts": {"10.1.0.2:80": {"state": "hang"}},
            "clients": [client()],
        }
    )
    assert statuses(result) == {"200": 50, "504": 50}
    hung = [o.latency for o in result.outcomes if o.result == "504"]
    assert {round(latency or 0, 6) for latency in hung} == {3.0}  # the route's timeout
    assert result.hosts["10.1.0.2:80"].cut == 50


def test_the_clients_deadline_comes_before_the_route_timeout():
    result = run(
        {
            "duration": "10s",
            "hosts": {"10.1.0.2:80": {"state": "hang"}},
            "clients": [client(deadline="1s")],
        }
    )
    assert statuses(result) == {"200": 50, "timeout": 50}


def test_a_reset_mid_body_and_a_host_going_down_and_up():
    result = run(
        {
            "duration": "30s",
            "hosts": {
                "10.1.0.1:80": {"at": [{"time": "10s", "state": "reset"}]},
                "10.1.0.2:80": {
                    "at": [{"time": "10s", "state": "down"}, {"time": "20s", "state": "up"}]
                },
            },
            "clients": [client()],
        }
    )
    one, two = result.hosts["10.1.0.1:80"], result.hosts["10.1.0.2:80"]
    # 10-20s: one resets after the response head (the client's response is cut: no
    # complete response), two refuses (502 from the gateway).
    assert one.cut >= 50
    assert two.refused == 50
    assert statuses(result) == {"200": 150, "reset": 100, "502": 50}


def test_retries_and_an_ejection_in_the_timeline():
    config = CONFIG + (
        "[clusters.api.outlier_detection]\n"
        'consecutive_5xx = 3\ninterval = "1s"\nbase_ejection_time = "10s"\n'
        "max_ejection_percent = 50\n"
    )
    scenario = {
        "duration": "30s",
        "hosts": {"10.1.0.2:80": {"at": [{"time": "5s", "status": 503}]}},
        "clients": [client(requests=[{"path": "/retry/x"}])],
        "expect": {
            "status": {"200": 300},
            "retries": {"total": ">= 3", "max_per_request": 1},
            "ejections": [{"host": "10.1.0.2:80", "between": ["5s", "6s"]}],
            "ejection_order": ["10.1.0.2:80"],
        },
    }
    result = run(scenario, config)
    checks = check_expectations(result)
    assert all(c.passed for c in checks), checks
    kinds = [(e.kind, e.host) for e in result.events if e.host]
    # Ejected after three 503s in a row (the retries went to the other host), back after
    # base_ejection_time, ejected again by the next three.
    assert kinds[:3] == [
        ("ejected", "10.1.0.2:80"),
        ("returned", "10.1.0.2:80"),
        ("ejected", "10.1.0.2:80"),
    ]
    ejected, returned = [e.time for e in result.events if e.host][:2]
    assert 10.0 <= returned - ejected <= 11.0  # base_ejection_time, seen at the next interval


def test_health_check_transitions_in_the_timeline():
    config = CONFIG + (
        '[[clusters.api.health_checks]]\ntype = "http"\npath = "/healthz"\ninterval = "1s"\n'
        "unhealthy_threshold = 2\nhealthy_threshold = 1\n"
    )
    scenario = {
        "duration": "20s",
        "hosts": {
            "10.1.0.1:80": {"at": [{"time": "5s", "status": 503}, {"time": "10s", "status": 200}]}
        },
        "clients": [client(rate=1)],
        "expect": {
            "health": [
                {"host": "10.1.0.1:80", "between": ["5s", "8s"]},
                {"host": "10.1.0.1:80", "healthy": True, "between": ["10s", "12s"]},
            ]
        },
    }
    result = run(scenario, config)
    assert all(c.passed for c in check_expectations(result)), check_expectations(result)


def test_a_failing_expectation_fails_and_says_what_happened():
    result = run(
        {
            "duration": "2s",
            "clients": [client()],
            "expect": {
                "status": {"200": "< 5", "5xx": 0},
                "latency": {"p99": "<= 1ms"},
                "stats": {"cluster.api.upstream_rq_total": 20, "cluster.api.nope": 1},
                "served_by": {"10.1.0.9:80": 1},
            },
        }
    )
    checks = {c.expectation: (c.passed, c.actual) for c in check_expectations(result)}
    assert checks == {
        "status 200 < 5": (False, "20"),
        "status 5xx 0": (True, "0"),
        "latency p99 <= 1ms": (True, "0.0ms"),
        "stat cluster.api.upstream_rq_total 20": (True, "20"),
        "stat cluster.api.nope 1": (False, "no such stat"),
        "served_by 10.1.0.9:80 1": (False, "no such host"),
    }


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    def latencies(seed: int) -> list[float | None]:
        scenario = {
            "duration": "5s",
            "seed": seed,
            "hosts": {"10.1.0.1:80": {"latency": {"exponential": "50ms"}}},
            "clients": [client(rate=50)],
        }
        return [o.latency for o in run(scenario).outcomes]

    assert latencies(1) == latencies(1)
    assert latencies(1) != latencies(2)


def test_closed_loop_clients_send_back_to_back():
    result = run(
        {
            "duration": "10s",
            "hosts": {"10.1.0.1:80": {"latency": "100ms"}, "10.1.0.2:80": {"latency": "100ms"}},
            "clients": [{"concurrency": 2, "think_time": "100ms", "requests": [{"path": "/x"}]}],
        }
    )
    assert statuses(result) == {"200": 100}  # 2 connections x 5 a second x 10 s


def test_a_closed_loop_client_of_a_direct_response_still_moves_the_clock():
    config = CONFIG.replace('cluster = "api"\ntimeout = "3s"', "direct_response = { status = 204 }")
    result = run({"duration": "1s", "clients": [{"concurrency": 1}]}, config)
    assert statuses(result) == {"204": 1000}  # one a millisecond: the default think time


def test_a_scenario_that_does_not_fit_its_config_is_refused_by_path():
    with pytest.raises(ConfigError) as caught:
        run(
            {
                "duration": "1s",
                "hosts": {"10.9.9.9:80": {}},
                "clients": [client(listener="nope")],
            }
        )
    assert caught.value.errors == [
        'test.toml: hosts."10.9.9.9:80": no cluster of the config has this endpoint '
        "(it has 10.1.0.1:80, 10.1.0.2:80)",
        "test.toml: clients[0].listener: no listener 'nope' (the config has edge)",
    ]


def test_the_report_notes_what_a_scenario_does_not_simulate():
    config = CONFIG.replace(
        'endpoints = ["10.1.0.1:80", "10.1.0.2:80"]',
        'endpoints = ["api.internal:80"]\ntype = "strict_dns"',
    )
    result = run({"duration": "1s", "clients": [client()]}, config)
    assert result.notes == ["cluster api: no DNS is asked; each endpoint name is one host"]
    assert set(result.hosts) == {"api.internal:80"}  # the name is the host's address


def test_tasks_alive_at_the_end_are_reported_and_checked():
    # No route timeout, no stream idle timeout (the HCM's default would answer 408 after
    # five minutes, as the run ends), no client deadline: nothing ends the one request.
    config = CONFIG.replace('timeout = "3s"', 'timeout = "0s"').replace(
        'virtual_hosts = ["api"]', 'virtual_hosts = ["api"]\nstream_idle_timeout = "0s"'
    )
    scenario = {
        "duration": "1s",
        "hosts": {"10.1.0.1:80": {"state": "hang"}, "10.1.0.2:80": {"state": "hang"}},
        "clients": [client(rate=1)],
        "expect": {"leftover_tasks": {"streams": 0, "connections": 0}},
    }
    result = run(scenario, config)
    assert result.unfinished == 1
    (stream,) = result.leftover_tasks["stream"]
    assert stream["name"] == "stream 1 GET /x"
    assert stream["state"] == "waiting for upstream response headers"
    checks = {c.expectation: c.passed for c in check_expectations(result)}
    assert checks == {"leftover_tasks streams 0": False, "leftover_tasks connections 0": False}


def test_no_task_outlives_a_request_its_client_gave_up_on():
    config = CONFIG.replace('timeout = "3s"', 'timeout = "0s"')
    scenario = {
        "duration": "5s",
        "hosts": {"10.1.0.1:80": {"state": "hang"}},
        "clients": [client(deadline="1s")],
        "expect": {"leftover_tasks": {"streams": 0, "connections": 0}},
    }
    result = run(scenario, config)
    assert statuses(result) == {"200": 25, "timeout": 25}
    assert all(c.passed for c in check_expectations(result))


def test_http2_upstreams_multiplex_and_misbehave_per_stream():
    config = CONFIG.replace('connect_timeout = "1s"', 'connect_timeout = "1s"\nprotocol = "http2"')
    scenario = {
        "duration": "20s",
        "hosts": {
            "10.1.0.1:80": {"latency": "100ms", "body_size": "100KiB"},  # past the window
            "10.1.0.2:80": {"state": "hang", "at": [{"time": "10s", "state": "reset"}]},
        },
        "clients": [client(deadline="5s")],
        "expect": {"leftover_tasks": {"streams": 0, "connections": 0}},
    }
    result = run(scenario, config)
    # The hanging host's streams meet the route timeout; the resetting one's are cut
    # mid-body (RST_STREAM), after the response head reached the client.
    assert statuses(result) == {"200": 100, "504": 50, "reset": 50}
    assert {address: host.connections for address, host in result.hosts.items()} == {
        "10.1.0.1:80": 1,  # one HTTP/2 connection carries every stream
        "10.1.0.2:80": 1,
    }
    assert all(c.passed for c in check_expectations(result))


def test_access_log_lines_are_counted_by_pattern():
    config = CONFIG.replace(
        'virtual_hosts = ["api"]',
        'virtual_hosts = ["api"]\naccess_log = { format = "envoy", path = "-" }',
    )
    scenario = {
        "duration": "2s",
        "hosts": {"10.1.0.2:80": {"state": "down"}},
        "clients": [client()],
        "expect": {"access_log": {'" 502 UF ': 10, '" 200 - ': 10, "PUT ": 0}},
    }
    result = run(scenario, config)
    assert result.access_log_lines is not None and len(result.access_log_lines) == 20
    assert all(c.passed for c in check_expectations(result)), check_expectations(result)
    # Without an access log in the config, there is nothing to count: that fails.
    (check,) = check_expectations(run({**scenario, "expect": {"access_log": {"x": 0}}}))
    assert (check.passed, check.actual) == (False, "the config has no access log")


def test_http2_clients_multiplex_on_one_connection_and_reset_what_they_give_up_on():
    scenario = {
        "duration": "10s",
        "hosts": {"10.1.0.1:80": {"latency": "100ms"}, "10.1.0.2:80": {"state": "hang"}},
        "clients": [client(deadline="1s", protocol="http2")],
        "expect": {"leftover_tasks": {"streams": 0, "connections": 0}},
    }
    result = run(scenario)
    assert statuses(result) == {"200": 50, "timeout": 50}
    assert result.stats["http.edge.downstream_cx_http2_total"] == 1
    # Each stream the client reset (its deadline) ended the gateway's stream too.
    assert all(c.passed for c in check_expectations(result))


def test_grpc_calls_end_with_the_grpc_status_their_host_maps_to():
    config = CONFIG.replace('connect_timeout = "1s"', 'connect_timeout = "1s"\nprotocol = "http2"')
    scenario = {
        "duration": "10s",
        "hosts": {"10.1.0.2:80": {"at": [{"time": "5s", "status": 503}]}},
        "clients": [
            {
                "rate": 10,
                "protocol": "http2",
                "requests": [{"path": "/pkg.Service/Call", "grpc": True, "body_size": 10}],
            }
        ],
        "expect": {"status": {"grpc-0": 75, "grpc-14": 25}},  # 503: UNAVAILABLE
    }
    result = run(scenario, config)
    assert all(c.passed for c in check_expectations(result)), check_expectations(result)


def test_server_streaming_grpc_calls_run_their_length_or_meet_the_route_timeout():
    config = CONFIG.replace('connect_timeout = "1s"', 'connect_timeout = "1s"\nprotocol = "http2"')
    watch = {"messages": 4, "interval": "1s", "size": 100}

    def watcher(name: str, path: str) -> dict[str, object]:
        return {
            "name": name,
            "rate": 1,
            "protocol": "http2",
            "requests": [{"path": path, "grpc_stream": watch}],
        }

    scenario = {
        "duration": "10s",
        "hosts": {
            "10.1.0.1:80": {"latency": "100ms"},
            "10.1.0.2:80": {"latency": "100ms", "state": "reset"},
        },
        # The retry route's 5 s timeout lets a 3.1 s stream run; the catch-all's 3 s does not.
        "clients": [watcher("long", "/retry/pkg.Feed/Watch"), watcher("short", "/pkg.Feed/Watch")],
    }
    result = run(scenario, config)
    seen: dict[tuple[str, str], set[float]] = collections.defaultdict(set)
    for outcome in result.outcomes:
        seen[outcome.client, outcome.result].add(round(outcome.latency or 0, 6))
    # Whole streams: the think time, then four messages a second apart, then OK. A reset
    # host cut its stream after two messages: the gateway ends it UNAVAILABLE (no retry:
    # the response had begun), unless the route's timeout came first: DEADLINE_EXCEEDED.
    assert seen == {
        ("long", "grpc-0"): {3.1},
        ("long", "grpc-14"): {2.1},
        ("short", "grpc-4"): {3.0},
        ("short", "grpc-14"): {2.1},
    }


def test_a_clients_server_name_chooses_the_filter_chain():
    config = """
[listeners.edge]
address = "127.0.0.1:10000"

[[listeners.edge.filter_chains]]
filter_chain_match = { server_names = ["api.example.com"] }
filters = [{ type = "http_connection_manager", virtual_hosts = ["api"], stat_prefix = "api" }]

[listeners.edge.default_filter_chain]
filters = [{ type = "http_connection_manager", virtual_hosts = ["other"], stat_prefix = "other" }]

[virtual_hosts.api]
domains = ["*"]
routes = [{ match = { prefix = "/" }, cluster = "api" }]

[virtual_hosts.other]
domains = ["*"]
routes = [{ match = { prefix = "/" }, direct_response = { status = 421 } }]

[clusters.api]
endpoints = ["10.1.0.1:80"]
"""
    scenario = {
        "duration": "1s",
        "clients": [
            {"name": "sni", "rate": 10, "server_name": "api.example.com"},
            {"name": "plain", "rate": 10},
        ],
    }
    scenario["expect"] = {
        "status": {"200": 10, "421": 10},
        "clients": {"sni": {"status": {"200": 10, "421": 0}}, "plain": {"status": {"421": 10}}},
    }
    result = run(scenario, config)
    by_client = collections.Counter((o.client, o.result) for o in result.outcomes)
    assert by_client == {("sni", "200"): 10, ("plain", "421"): 10}
    checks = [c.expectation for c in check_expectations(result) if c.passed]
    assert checks == [
        "status 200 10",
        "status 421 10",
        "client sni: status 200 10",
        "client sni: status 421 0",
        "client plain: status 421 10",
    ]
    assert result.notes == []


def test_websocket_sessions_are_tunnelled_and_cut_when_their_host_goes_down():
    config = CONFIG.replace(
        '[[virtual_hosts.api.routes]]\nmatch = { prefix = "/retry/" }',
        '[[virtual_hosts.api.routes]]\nmatch = { path = "/ws" }\ncluster = "api"\n'
        'upgrade = ["websocket"]\n\n[[virtual_hosts.api.routes]]\nmatch = { prefix = "/retry/" }',
    )
    session = {"messages": 5, "interval": "1s", "size": 100}
    scenario = {
        "duration": "10s",
        "hosts": {"10.1.0.2:80": {"at": [{"time": "5s", "state": "down"}]}},
        "clients": [client(rate=2, requests=[{"path": "/ws", "websocket": session}])],
        "expect": {"leftover_tasks": {"streams": 0, "connections": 0}},
    }
    result = run(scenario, config)
    # Sessions take 4 s: those on 10.1.0.2 that had not ended by 5 s are cut there; it
    # refuses the rest. The other host's all come back whole.
    assert statuses(result) == {"101": 11, "reset": 4, "502": 5}
    assert result.hosts["10.1.0.1:80"].served == {101: 10}
    assert all(c.passed for c in check_expectations(result))


def test_task_snapshots_show_what_the_gateway_is_doing_then():
    scenario = {
        "duration": "3s",
        "task_snapshots": ["1.5s"],
        "hosts": {"10.1.0.2:80": {"state": "hang"}},
        "clients": [client(rate=1)],
    }
    (snapshot,) = run(scenario).task_snapshots
    assert (snapshot.at, snapshot.listener, snapshot.worker) == (1.5, "edge", None)
    tasks = snapshot.text
    # The first request (sent at 0 s) went to the hanging host: its stream waits, with
    # what is left of the route's 3 s timeout (virtual time, as the admin's /tasks shows).
    (stream,) = [line for line in tasks.splitlines() if "[stream]" in line]
    assert "stream 1 GET /x" in stream
    assert "state=waiting for upstream response headers" in stream
    assert "upstream_host=10.1.0.2:80" in stream
    assert "deadline_s=1.5" in stream


def test_a_hot_reload_moves_new_requests_and_lets_those_in_flight_finish(tmp_path):
    # Version 2: the catch-all route goes to a new cluster.
    v2 = tmp_path / "v2.toml"
    route = 'match = { prefix = "/" }\ncluster = "api"'
    assert route in CONFIG
    v2.write_text(
        CONFIG.replace(route, 'match = { prefix = "/" }\ncluster = "v2"')
        + '[clusters.v2]\nendpoints = ["10.2.0.1:80"]\n'
    )
    slow = {"latency": "1s"}
    result = run(
        {
            "duration": "10s",
            "hosts": {"10.1.0.1:80": slow, "10.1.0.2:80": slow, "10.2.0.1:80": slow},
            "reloads": [{"time": "5050ms", "config": str(v2)}],
            "clients": [client()],
        }
    )
    # Eleven requests were in flight at the reload: none is lost, and each is answered by
    # the host it went to (version 1), as the old cluster drains.
    assert statuses(result) == {"200": 100}
    old = sum(sum(result.hosts[h].served.values()) for h in ("10.1.0.1:80", "10.1.0.2:80"))
    assert old == 51  # sent at t <= 5s
    # The clients' keep-alive connections carried on, their next requests routed anew.
    assert result.hosts["10.2.0.1:80"].served == {200: 49}
    assert result.stats["listener.edge.downstream_cx_total"] <= 11  # ~10 in flight at once
    [reload] = [e for e in result.events if e.kind == "reload"]
    assert (reload.time, reload.detail) == (5.05, f"config reloaded from {v2}: cluster v2 added")


def test_a_reload_that_changes_the_listener_drains_its_connections(tmp_path):
    # The listener's settings change: its successor takes new connections, and the old
    # one drains by the new config's drain_timeout (1 s): requests on it still running
    # at t=6s are cut (the clients see their connections close with no response), those
    # in flight at the reload and those sent meanwhile on kept-alive connections.
    v2 = tmp_path / "v2.toml"
    v2.write_text(
        CONFIG.replace('virtual_hosts = ["api"]', 'virtual_hosts = ["api"]\nidle_timeout = "9m"')
        + '[server]\ndrain_timeout = "1s"\n'
    )
    result = run(
        {
            "duration": "10s",
            "hosts": {"10.1.0.1:80": {"latency": "2500ms"}, "10.1.0.2:80": {"latency": "2500ms"}},
            "reloads": [{"time": "5s", "config": str(v2)}],
            "clients": [client()],
        }
    )
    cut = [o.sent_at for o in result.outcomes if o.result == "reset"]
    assert cut and min(cut) >= 6.0 - 2.5 and max(cut) < 6.0
    assert statuses(result)["200"] == 100 - len(cut)
    assert result.stats["listener.edge.downstream_cx_total"] > 25  # fresh connections


def test_reloads_are_checked_before_the_run(tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[clusters.api]\nendpoints = 3\n")
    scenario = {
        "duration": "10s",
        "reloads": [{"time": "5s", "config": str(broken)}],
        "clients": [client()],
    }
    with pytest.raises(ConfigError) as raised:
        run(scenario)
    assert raised.value.errors[0].startswith("test.toml: reloads[0].config: ")
    assert "clusters.api.endpoints" in raised.value.errors[0]
    late = {**scenario, "reloads": [{"time": "5s", "config": "a"}, {"time": "11s", "config": "b"}]}
    with pytest.raises(ConfigError) as raised:
        structure_scenario(late, "test.toml")
    assert raised.value.errors == ["test.toml: reloads[1].time: 11s is after the scenario's end"]


def test_local_ratelimit_refills_on_virtual_time():
    limited = CONFIG.replace(
        'virtual_hosts = ["api"]', 'virtual_hosts = ["api"]\nhttp_filters = ["limit"]'
    ) + (
        '[http_filters.limit]\ntype = "local_ratelimit"\n'
        'max_tokens = 5\ntokens_per_fill = 5\nfill_interval = "1s"\n'
    )
    result = run({"duration": "10s", "clients": [client()]}, limited)
    # Ten a second against five a second: half pass. (On the wall clock, where the run's
    # hundred requests take a fraction of a second, nearly all would be refused.)
    assert 45 <= statuses(result)["200"] <= 55
    assert statuses(result)["200"] + statuses(result)["429"] == 100


def test_workers_share_the_clients_and_each_has_its_own_outlier_detection():
    config = CONFIG.replace(
        'virtual_hosts = ["api"]',
        'virtual_hosts = ["api"]\naccess_log = { format = "envoy", path = "-" }',
    ) + (
        "[clusters.api.outlier_detection]\n"
        'consecutive_5xx = 3\ninterval = "1s"\nbase_ejection_time = "60s"\n'
        "max_ejection_percent = 50\n"
    )
    scenario = {
        "duration": "10s",
        "workers": 2,
        "hosts": {"10.1.0.2:80": {"at": [{"time": "5s", "status": 503}]}},
        "clients": [client(requests=[{"path": "/retry/x"}])],
        "expect": {"access_log": {'" 200 - ': 100}},
    }
    result = run(scenario, config)
    assert result.workers == 2
    # Every request of the one-worker run, each sent once, by one worker or the other.
    assert sorted(o.tag for o in result.outcomes) == sorted(f"client/{n}" for n in range(1, 101))
    assert statuses(result) == {"200": 100}
    assert result.stats["cluster.api.upstream_rq_2xx"] == 100  # the workers' stats add up
    assert len(result.access_log_lines or []) == 100  # both workers' logs
    # Each worker saw the host fail on its own connections and ejected it itself.
    ejections = [(e.worker, e.host) for e in result.events if e.kind == "ejected"]
    assert sorted(ejections) == [(0, "10.1.0.2:80"), (1, "10.1.0.2:80")]
    again = run(scenario, config)
    assert again.outcomes == result.outcomes and again.events == result.events
