"""The dashboard's history with workers: the supervisor adds up what each worker counted in
the same second (gateway/admin/history.py `render_merged`)."""

import json

import pytest

from gateway.admin import history
from gateway.admin.history import StatsHistory, render_merged
from gateway.clusters.cluster_stats import HostStats
from gateway.clusters.host import Host
from gateway.config.model import Address
from gateway.observability.stats import StatsStore

BOUNDS = [1.0, 10.0]


def export(samples: list[tuple[float, int, list[int], float, float]], bounds=BOUNDS) -> dict:
    """A worker's `/stats/history?format=raw`: cumulative samples of cluster `api`."""
    return {
        "interval_s": 1.0,
        "clusters": {"api": {"bounds": bounds, "samples": [list(s) for s in samples]}},
        "hosts": {},
        "listeners": {},
    }


def test_one_worker_renders_as_it_does_by_itself(monkeypatch):
    store = StatsStore()
    own = StatsHistory(store, ["api"])
    requests = store.scope("cluster.api", "cluster").counter("upstream_rq_total")
    latency = store.scope("cluster.api", "cluster").histogram("upstream_rq_time")
    clock = iter([100.0, 101.0, 102.0])
    monkeypatch.setattr(history.time, "time", lambda: next(clock))
    for values in ([], [3.0, 40.0], [0.5, 0.5, 7.0]):
        for value in values:
            requests.inc()
            latency.record(value)
        own.sample()
    alone = render_merged([json.loads(json.dumps(own.export()))])  # as it crosses HTTP
    assert alone == own.render()
    assert [p["rq_per_s"] for p in alone["clusters"]["api"]] == [2.0, 3.0]


def test_workers_counts_in_the_same_second_are_added_up():
    worker_0 = export([(100.0, 0, [0, 0, 0], 0.0, 0.0), (101.0, 4, [4, 0, 0], 2.0, 0.5)])
    # Worker 1 samples 0.2 s later: the same second.
    worker_1 = export([(100.2, 0, [0, 0, 0], 0.0, 0.0), (101.2, 6, [0, 6, 0], 30.0, 9.0)])
    (point,) = render_merged([worker_0, worker_1])["clusters"]["api"]
    assert point["time"] == 101.0
    assert point["rq_per_s"] == 10.0
    assert point["latency_mean_ms"] == 3.2  # 32 ms over 10 requests
    # Of both workers' samples (worker 0's alone: at most 1; worker 1's alone: 5.5).
    assert point["latency_p50_ms"] == pytest.approx(2.5)
    assert point["latency_p99_ms"] == pytest.approx(9.0)  # never above the largest sample


def test_a_restarted_worker_adds_only_what_it_counted_since():
    worker_0 = export(
        [(t, 10 * i, [10 * i, 0, 0], 0.0, 0.5) for i, t in enumerate([100.0, 101.0, 102.0])]
    )
    # Restarted at 101.5: its counts start at 0 again; its one interval ends at 102.5.
    worker_1 = export([(101.5, 0, [0, 0, 0], 0.0, 0.0), (102.5, 5, [5, 0, 0], 0.0, 0.5)])
    rates = [p["rq_per_s"] for p in render_merged([worker_1, worker_0])["clusters"]["api"]]
    assert rates == [10.0, 15.0]


def test_a_worker_with_other_buckets_or_out_of_step_is_left_out():
    worker_0 = export([(100.0, 0, [0, 0, 0], 0.0, 0.0), (101.0, 4, [4, 0, 0], 2.0, 0.5)])
    other_buckets = export(
        [(100.0, 0, [0, 0], 0.0, 0.0), (101.0, 8, [8, 0], 2.0, 0.5)], bounds=[5.0]
    )
    out_of_step = export([(100.0, 0, [0, 0, 0], 0.0, 0.0), (101.6, 8, [8, 0, 0], 2.0, 0.5)])
    merged = render_merged([worker_0, other_buckets, out_of_step])
    assert [p["rq_per_s"] for p in merged["clusters"]["api"]] == [4.0]


def _host(port: int) -> Host:
    # The history reads a host's address and stats only.
    return Host(Address("127.0.0.1", port), 1, pool=None, stats=HostStats())


def test_hosts_and_listeners_count_per_interval_and_departed_hosts_are_dropped(monkeypatch):
    store = StatsStore()
    scope = store.scope("http.edge", "http")
    ok, failed = scope.counter("downstream_rq_2xx"), scope.counter("downstream_rq_5xx")
    for c in (1, 3, 4):
        scope.counter(f"downstream_rq_{c}xx")
    up, down = _host(1), _host(2)
    members = [("api", up), ("api", down)]
    own = StatsHistory(store, [], hosts=lambda: members, listeners=lambda: ["edge", "tcp"])
    clock = iter([100.0, 101.0, 102.0, 103.0])
    monkeypatch.setattr(history.time, "time", lambda: next(clock))
    own.sample()
    up.stats.rq_total = up.stats.rq_success = 3
    up.stats.rq_active = 2
    down.stats.rq_total = down.stats.rq_error = down.stats.cx_connect_fail = 5
    ok.inc()
    failed.value += 5
    own.sample()
    own.sample()
    rendered = own.render()
    assert rendered == render_merged([json.loads(json.dumps(own.export()))])
    first, second = rendered["hosts"]["api"]["127.0.0.1:2"]
    assert first == {
        "time": 101.0,
        "elapsed_s": 1.0,
        "rq_total": 5,
        "rq_success": 0,
        "rq_error": 5,
        "cx_connect_fail": 5,
        "rq_active": 0,
    }
    assert second["rq_total"] == 0
    assert [p["rq_active"] for p in rendered["hosts"]["api"]["127.0.0.1:1"]] == [2, 2]
    (edge,) = rendered["listeners"].values()  # `tcp` has no connection manager
    assert edge[0] == {
        "time": 101.0,
        "elapsed_s": 1.0,
        "1xx": 0,
        "2xx": 1,
        "3xx": 0,
        "4xx": 0,
        "5xx": 5,
    }
    members.pop()  # the dead host leaves the cluster
    own.sample()
    assert list(own.render()["hosts"]["api"]) == ["127.0.0.1:1"]


def test_workers_host_counts_and_active_requests_add_up():
    def worker(offset: float, total: int, active: int) -> dict:
        rows = [[100.0 + offset, 0, 0, 0, 0, 0], [101.0 + offset, total, total, 0, 0, active]]
        return {
            "interval_s": 1.0,
            "clusters": {},
            "hosts": {"api": {"h:1": rows}},
            "listeners": {
                "edge": [[100.0 + offset, 0, 1, 0, 0, 0], [101.0 + offset, 0, 1 + total, 0, 0, 0]]
            },
        }

    merged = render_merged([worker(0, 4, 1), worker(0.2, 6, 2)])
    (point,) = merged["hosts"]["api"]["h:1"]
    assert (point["rq_total"], point["rq_success"], point["rq_active"]) == (10, 10, 3)
    assert merged["listeners"]["edge"][0]["2xx"] == 10
