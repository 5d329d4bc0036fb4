"""The last minutes of each cluster's request rate and latency, for the dashboard's plots.

A sampler task in the admin's nursery reads each cluster's `upstream_rq_total` and
`upstream_rq_time` once a second and keeps five minutes of samples. `render()` turns pairs
of neighbouring samples into rates and latency quantiles over that second (the histogram's
bucket counts subtract), so the plots need no state in the browser and are full as soon as
the page opens.
"""

import collections
import math
import time

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
                name: [
                    _point(s.latency.bounds, a, b)
                    for a, b in zip(s.samples, list(s.samples)[1:], strict=False)
                ]
                for name, s in self._series.items()
            },
        }


def _point(bounds: tuple[float, ...], before: Sample, after: Sample) -> dict[str, float | None]:
    elapsed = after.time - before.time
    counts = [b - a for a, b in zip(before.counts, after.counts, strict=True)]
    done = sum(counts)

    def latency(q: float) -> float | None:
        value = bucket_quantile(bounds, counts, q, after.latency_max)
        return None if math.isnan(value) else round(value, 3)

    return {
        "time": round(after.time, 3),
        "rq_per_s": round((after.requests - before.requests) / elapsed, 3) if elapsed else 0,
        "latency_mean_ms": round((after.latency_sum - before.latency_sum) / done, 3)
        if done
        else None,
        "latency_p50_ms": latency(0.5),
        "latency_p99_ms": latency(0.99),
    }
