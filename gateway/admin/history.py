"""The last minutes of each cluster's request rate and latency, each host's requests,
errors and connect failures, and each HTTP listener's responses by status class, for the
dashboard's plots and health.

A sampler task in the admin's nursery reads each cluster's `upstream_rq_total` and
`upstream_rq_time`, each host's stats and each connection manager's `downstream_rq_Nxx`
once a second and keeps five minutes of samples. `render()` turns pairs of neighbouring
samples into rates and latency quantiles over that second (the histogram's bucket counts
subtract), and into the counts of each host and listener in it, so the page needs no state
in the browser and is full as soon as it opens. A host that leaves its cluster leaves the
history at the next sample, so memory is bounded by the hosts there are.

A supervisor of workers plots them all: each worker `export()`s its samples, and
`render_merged` adds up what the workers counted in the same second.
"""

import bisect
import collections
import itertools
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import attrs
import trio

from gateway.clusters.host import Host
from gateway.observability.stats import Counter, Histogram, StatsStore, bucket_quantile

INTERVAL = 1.0
KEEP = 300

#: Per host (Envoy's per-host stats, /clusters): counters, whose intervals subtract, and
#: the gauge `rq_active`, whose interval is its value at the interval's end.
HOST_COUNTERS = ("rq_total", "rq_success", "rq_error", "cx_connect_fail")
HOST_GAUGES = ("rq_active",)
#: Per HTTP listener: its connection manager's responses by status class.
LISTENER_COUNTERS = tuple(f"downstream_rq_{c}xx" for c in range(1, 6))


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


@attrs.frozen
class CountsSample:
    """A host's or listener's counts (and gauges, last) at one moment."""

    time: float
    values: tuple[int, ...]


def _counts_deque() -> "collections.deque[CountsSample]":
    return collections.deque(maxlen=KEEP)


class StatsHistory:
    def __init__(
        self,
        store: StatsStore,
        clusters: list[str],
        *,
        hosts: Callable[[], Iterable[tuple[str, Host]]] = tuple,
        listeners: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        """`hosts` gives each cluster's name and host as they are now, `listeners` the
        listeners' names (asked at each sample: hosts and listeners come and go, and
        those gone leave the history)."""
        self._store = store
        self._hosts = hosts
        self._listeners = listeners
        self._series: dict[str, _Series] = {}
        for name in clusters:
            scope = store.scope(f"cluster.{name}", "cluster", {"envoy_cluster_name": name})
            series = _Series(
                scope.counter("upstream_rq_total"), scope.histogram("upstream_rq_time")
            )
            self._series[name] = series
        #: (cluster, address) -> samples; only the hosts the clusters have now (and only
        #: the listeners there are now).
        self._host_samples: dict[tuple[str, str], collections.deque[CountsSample]] = {}
        self._listener_samples: dict[str, collections.deque[CountsSample]] = {}

    def sample(self) -> None:
        now = time.time()
        for s in self._series.values():
            hist = s.latency
            s.samples.append(Sample(now, s.requests.value, tuple(hist.counts), hist.sum, hist.max))
        before, self._host_samples = self._host_samples, {}
        for cluster, host in self._hosts():
            key = (cluster, str(host.address))
            samples = self._host_samples[key] = before.get(key) or _counts_deque()
            stats = host.stats
            values = tuple(getattr(stats, n) for n in HOST_COUNTERS + HOST_GAUGES)
            samples.append(CountsSample(now, values))
        listeners, self._listener_samples = self._listener_samples, {}
        for name in self._listeners():
            found = [self._store.value(f"http.{name}.{n}") for n in LISTENER_COUNTERS]
            if None in found:
                continue  # not an HTTP listener (tcp_proxy): no status codes
            samples = self._listener_samples[name] = listeners.get(name) or _counts_deque()
            samples.append(CountsSample(now, tuple(v or 0 for v in found)))

    async def run(self) -> None:
        while True:
            self.sample()
            await trio.sleep(INTERVAL)

    def render(self) -> dict[str, object]:
        """Per cluster, one point per interval: time, requests per second, and the mean,
        p50 and p99 latency in ms of the requests that ended in it (null if none did).
        Per host and per listener, one point per interval with its counts in it."""
        hosts: dict[str, dict[str, list[dict[str, float]]]] = {}
        for (cluster, address), samples in self._host_samples.items():
            points = _count_intervals(samples, len(HOST_COUNTERS))
            hosts.setdefault(cluster, {})[address] = [_host_point(p) for p in points]
        return {
            "interval_s": INTERVAL,
            "clusters": {
                name: [_point(s.latency.bounds, i) for i in _intervals(s.samples)]
                for name, s in self._series.items()
            },
            "hosts": hosts,
            "listeners": {
                name: [_listener_point(p) for p in _count_intervals(samples, None)]
                for name, samples in self._listener_samples.items()
            },
        }

    def export(self) -> dict[str, Any]:
        """The samples themselves, for a supervisor to add up (`render_merged`)."""
        hosts: dict[str, dict[str, list[list[float]]]] = {}
        for (cluster, address), samples in self._host_samples.items():
            hosts.setdefault(cluster, {})[address] = [_row(s) for s in samples]
        return {
            "interval_s": INTERVAL,
            "clusters": {
                name: {
                    "bounds": list(s.latency.bounds),
                    "samples": [attrs.astuple(sample) for sample in s.samples],
                }
                for name, s in self._series.items()
            },
            "hosts": hosts,
            "listeners": {
                name: [_row(s) for s in samples] for name, samples in self._listener_samples.items()
            },
        }


def _row(sample: CountsSample) -> list[float]:
    return [sample.time, *sample.values]


def _from_rows(rows: list[list[float]]) -> list[CountsSample]:
    return [CountsSample(row[0], tuple(int(v) for v in row[1:])) for row in rows]


@attrs.frozen
class _Counts:
    """Between two samples of a host or listener: when it ended, how long it was, and its
    counts in it (a gauge: its value at the end)."""

    time: float
    elapsed: float
    values: tuple[int, ...]


def _count_intervals(samples: Iterable[CountsSample], counters: int | None) -> list[_Counts]:
    """The first `counters` values subtract (None: all of them); the rest are gauges. A
    counter that went back (/reset_counters) counts 0 in that interval."""
    return [
        _Counts(
            b.time,
            b.time - a.time,
            tuple(
                max(y - x, 0) if counters is None or i < counters else y
                for i, (x, y) in enumerate(zip(a.values, b.values, strict=True))
            ),
        )
        for a, b in itertools.pairwise(samples)
    ]


def _host_point(counts: _Counts) -> dict[str, float]:
    values = dict(zip(HOST_COUNTERS + HOST_GAUGES, counts.values, strict=True))
    return {"time": round(counts.time, 3), "elapsed_s": round(counts.elapsed, 3), **values}


def _listener_point(counts: _Counts) -> dict[str, float]:
    classes = {f"{c}xx": v for c, v in zip(range(1, 6), counts.values, strict=True)}
    return {"time": round(counts.time, 3), "elapsed_s": round(counts.elapsed, 3), **classes}


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
        bounds, _ = max(series, key=lambda s: len(s[1]))
        merged = _merge([points for b, points in series if b == bounds], _add)
        clusters[name] = [_point(bounds, point) for point in merged]
    return {
        "interval_s": INTERVAL,
        "clusters": clusters,
        "hosts": _merged_hosts(exports),
        "listeners": _merged_listeners(exports),
    }


def _merged_hosts(exports: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, float]]]]:
    """Each host's counts, added up over the workers (each has its own pools to it)."""
    rows: dict[tuple[str, str], list[list[list[float]]]] = {}
    for export in exports:
        for cluster, by_address in export["hosts"].items():
            for address, samples in by_address.items():
                rows.setdefault((cluster, address), []).append(samples)
    hosts: dict[str, dict[str, list[dict[str, float]]]] = {}
    for (cluster, address), series in rows.items():
        intervals = [_count_intervals(_from_rows(r), len(HOST_COUNTERS)) for r in series]
        points = [_host_point(p) for p in _merge(intervals, _add_counts)]
        hosts.setdefault(cluster, {})[address] = points
    return hosts


def _merged_listeners(exports: list[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    rows: dict[str, list[list[list[float]]]] = {}
    for export in exports:
        for name, samples in export["listeners"].items():
            rows.setdefault(name, []).append(samples)
    return {
        name: [
            _listener_point(p)
            for p in _merge([_count_intervals(_from_rows(r), None) for r in series], _add_counts)
        ]
        for name, series in rows.items()
    }


_I = TypeVar("_I", bound="_Timed")


class _Timed(Protocol):
    @property
    def time(self) -> float: ...


def _merge(series: list[list[_I]], add: Callable[[_I, _I], _I]) -> list[_I]:
    """The intervals of the longest series, each with every other series' interval that
    ends nearest to it (within half an interval) added."""
    points = max(series, key=len)
    merged = list(points)
    ends = [point.time for point in points]
    for intervals in series:
        if intervals is points:
            continue
        for interval in intervals:
            at = _nearest(ends, interval.time)
            if at is not None:
                merged[at] = add(merged[at], interval)
    return merged


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


def _add_counts(a: _Counts, b: _Counts) -> _Counts:
    return attrs.evolve(a, values=tuple(x + y for x, y in zip(a.values, b.values, strict=True)))


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
