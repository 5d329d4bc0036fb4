"""The dashboard's history with workers: the supervisor adds up what each worker counted in
the same second (gateway/admin/history.py `render_merged`)."""

import json

import pytest

from gateway.admin import history
from gateway.admin.history import StatsHistory, render_merged
from gateway.observability.stats import StatsStore

BOUNDS = [1.0, 10.0]


def export(samples: list[tuple[float, int, list[int], float, float]], bounds=BOUNDS) -> dict:
    """A worker's `/stats/history?format=raw`: cumulative samples of cluster `api`."""
    return {
        "interval_s": 1.0,
        "clusters": {"api": {"bounds": bounds, "samples": [list(s) for s in samples]}},
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
