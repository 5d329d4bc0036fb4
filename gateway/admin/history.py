"""The last minutes of each cluster's request rate and latency, for the dashboard's plots.

A sampler task in the admin's nursery reads each cluster's `upstream_rq_total` and
`upstream_rq_time` once a second and keeps five minutes of samples. `render()` turns pairs
of neighbouring samples into rates and latency quantiles over that second (the histogram's
bucket counts subtract), so the plots need no state in the browser and are full as soon as
the page opens.

A supervisor of workers plots them all: each worker `export()`s its samples, and
`render_merged` adds up what the workers counted in the same second.
"""

import bisect
import collections
import itertools
import math
import time
from collections.abc import Iterable
from typing import Any

import attrs
import trio

from gateway.observability.stats import Counter, Histogram, StatsStore, bucket_quantile

INTERVAL = 1.0
KEEP = 300


@attrs.frozen
class Sample:
    time: float
    requests: int
    #: The latency histogram's bucket counts, sum and largest sample at that moment.
    counts: tuple[int, ...]
    latency_sum: float
    latency_max: float


@attrs.define
class _Series:
    requests: Counter
    latency: Histogram
    samples: "collections.deque[Sample]" = attrs.Factory(lambda: collections.deque(maxlen=KEEP))


class StatsHistory:
    def __init__(self, store: StatsStore, clusters: list[str]) -> None:
        self._series: dict[str, _Series] = {}
        for name in clusters:
            scope = store.scope(f"cluster.{name}", "cluster", {"envoy_cluster_name": name})
            series = _Series(
                scope.counter("upstream_rq_total"), scope.histogram("upstream_rq_time")
            )
            self._series[name] = series

    def sample(self) -> None:
        now = time.time()
        for s in self._series.values():
            hist = s.latency
            s.samples.append(Sample(now, s.requests.value, tuple(hist.counts), hist.sum, hist.max))

    async def run(self) -> None:
        while True:
            self.sample()
            await trio.sleep(INTERVAL)

    def render(self) -> dict[str, object]:
        """Per cluster, one point per interval: time, requests per second, and the mean,
        p50 and p99 latency in ms of the requests that ended in it (null if none did)."""
        return {
            "interval_s": INTERVAL,
            "clusters": {
                name: [_point(s.latency.bounds, i) for i in _intervals(s.samples)]
                for name, s in self._series.items()
            },
        }

    def export(self) -> dict[str, Any]:
        """The samples themselves, for a supervisor to add up (`render_merged`)."""
        return {
            "interval_s": INTERVAL,
            "clusters": {
                name: {
                    "bounds": list(s.latency.bounds),
                    "samples": [attrs.astuple(sample) for sample in s.samples],
                }
                for name, s in self._series.items()
            },
        }


@attrs.frozen
class _Interval:
    """Between two samples: when it ended, how long it was, and the requests, latency
    bucket counts and latency sum counted in it; `latency_max` bounds its samples."""

    time: float
    elapsed: float
    requests: int
    counts: tuple[int, ...]
    latency_sum: float
    latency_max: float


def _intervals(samples: Iterable[Sample]) -> list[_Interval]:
    return [
        _Interval(
            b.time,
            b.time - a.time,
            b.requests - a.requests,
            tuple(y - x for x, y in zip(a.counts, b.counts, strict=True)),
            b.latency_sum - a.latency_sum,
            b.latency_max,
        )
        for a, b in itertools.pairwise(samples)
    ]


def render_merged(exports: list[dict[str, Any]]) -> dict[str, object]:
    """Workers' `export()`s as one `render()`: the intervals of the worker with the longest
    history are the points, and every other worker's interval is added to the point that
    ends nearest to it (the workers sample each second from about the same moment), if one
    ends within half an interval. Intervals are added, not samples, so a restarted worker
    (its counts from 0 again) adds only what it counted since. A worker whose buckets
    differ (restarted after `histogram_buckets` changed) is left out of that cluster."""
    clusters: dict[str, list[dict[str, float | None]]] = {}
    names = dict.fromkeys(name for export in exports for name in export["clusters"])
    for name in names:
        series = [
            (tuple(e["clusters"][name]["bounds"]), _intervals(_samples(e["clusters"][name])))
            for e in exports
            if name in e["clusters"]
        ]
        bounds, points = max(series, key=lambda s: len(s[1]))
        merged = list(points)
        ends = [point.time for point in points]
        for other_bounds, intervals in series:
            if intervals is points or other_bounds != bounds:
                continue
            for interval in intervals:
                at = _nearest(ends, interval.time)
                if at is not None:
                    merged[at] = _add(merged[at], interval)
        clusters[name] = [_point(bounds, point) for point in merged]
    return {"interval_s": INTERVAL, "clusters": clusters}


def _samples(exported: dict[str, Any]) -> list[Sample]:
    return [
        Sample(time_, requests, tuple(counts), latency_sum, latency_max)
        for time_, requests, counts, latency_sum, latency_max in exported["samples"]
    ]


def _nearest(ends: list[float], when: float) -> int | None:
    """The index of the end nearest to `when`, if within half an interval."""
    at = bisect.bisect_left(ends, when)
    near = min(
        (i for i in (at - 1, at) if 0 <= i < len(ends)),
        key=lambda i: abs(ends[i] - when),
        default=None,
    )
    return near if near is not None and abs(ends[near] - when) <= INTERVAL / 2 else None


def _add(a: _Interval, b: _Interval) -> _Interval:
    return attrs.evolve(
        a,
        requests=a.requests + b.requests,
        counts=tuple(x + y for x, y in zip(a.counts, b.counts, strict=True)),
        latency_sum=a.latency_sum + b.latency_sum,
        latency_max=max(a.latency_max, b.latency_max),
    )


def _point(bounds: tuple[float, ...], interval: _Interval) -> dict[str, float | None]:
    counts = interval.counts
    done = sum(counts)

    def latency(q: float) -> float | None:
        value = bucket_quantile(bounds, counts, q, interval.latency_max)
        return None if math.isnan(value) else round(value, 3)

    elapsed = interval.elapsed
    return {
        "time": round(interval.time, 3),
        "rq_per_s": round(interval.requests / elapsed, 3) if elapsed else 0,
        "latency_mean_ms": round(interval.latency_sum / done, 3) if done else None,
        "latency_p50_ms": latency(0.5),
        "latency_p99_ms": latency(0.99),
    }
