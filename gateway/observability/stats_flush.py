"""Flushing stats to the `[[stats_sinks]]` every `[server] stats_flush_interval`, as Envoy's
server does: counters as what they counted since the last flush, gauges as their value,
histograms as their samples.

Stats come from one or more sources, each a list of `StatsStore.export()` rows: the
gateway's own store, or with worker processes the supervisor's and each worker's (the
supervisor flushes what /stats adds up; docs/architecture.md, "Stats"). A counter's
increase is taken per source, then added up, so a worker that restarts (its counters back
at 0) does not make the sum go backwards. As Envoy sends only the stats that were ever
used, a counter or gauge is sent once it has been non-zero: from then on every flush
carries it, 0 included (a gauge back at 0 must say so; a receiver keeps a gauge's last
value).
"""

from collections.abc import Collection, Iterable, Iterator
from typing import Any

import trio

from gateway.observability.stats import Counter, Gauge, Histogram, SampledHistogram, StatsStore
from gateway.observability.stats_sink import UdpSink
from gateway.observability.statsd import StatsdFormat
from gateway.observability.tasktree import annotate

#: Export rows (StatsStore.export), named by where they came from.
Source = tuple[str, list[dict[str, Any]]]
#: A histogram, the samples a sink gets of it, and how many it recorded meanwhile.
Timer = tuple[Histogram, list[float], int]


class StatsFlusher:
    def __init__(self, sinks: list[UdpSink]) -> None:
        self.sinks = sinks
        #: Each source's counter values at the last flush.
        self._last: dict[str, dict[str, int]] = {}
        #: Counters and gauges that have been non-zero: sent at every flush since.
        self._used: set[str] = set()
        self.flushes = 0

    def _increases(self, sources: list[Source], keep: Collection[str] | None) -> dict[str, int]:
        """Each counter's increase since the last flush, all sources added up. A value
        below the last one means the counter started again (/reset_counters): all of it
        is new. A source missing this time (a worker that did not answer) keeps its last
        values for the next flush, unless it is not in `keep` (a worker that is gone)."""
        total: dict[str, int] = {}
        for source, rows in sources:
            before = self._last.get(source, {})
            now = self._last[source] = {
                r["name"]: r["value"] for r in rows if r["kind"] == "Counter"
            }
            for name, value in now.items():
                previous = before.get(name, 0)
                increase = value - previous if value >= previous else value
                total[name] = total.get(name, 0) + increase
        if keep is not None:
            self._last = {k: v for k, v in self._last.items() if k in keep}
        return total

    def flush(
        self,
        sources: list[Source],
        timers: Iterable[Timer] = (),
        *,
        keep: Collection[str] | None = None,
    ) -> None:
        """Sends the counters and gauges of `sources` and the samples of `timers` to every
        sink; `keep` names the sources that still exist (see `_increases`). Synchronous:
        nothing here waits, so it also runs as a task is cancelled."""
        merged = StatsStore()
        for _, rows in sources:
            merged.merge([r for r in rows if r["kind"] != "Histogram"])
        increases = self._increases(sources, keep)
        counters: list[tuple[Counter, int]] = []
        gauges: list[Gauge] = []
        for stat in merged:
            if isinstance(stat, Histogram):
                continue
            value = increases[stat.name] if isinstance(stat, Counter) else stat.value
            if value:
                self._used.add(stat.name)
            elif stat.name not in self._used:
                continue
            if isinstance(stat, Counter):
                counters.append((stat, value))
            else:
                gauges.append(stat)
        sampled = [t for t in timers if t[1]]
        for sink in self.sinks:
            sink.send(_lines(sink.format, counters, gauges, sampled))
        self.flushes += 1

    async def connect(self) -> None:
        for sink in self.sinks:
            await sink.connect()

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def task_fields(self) -> dict[str, object]:
        """What /tasks shows on the flush task."""
        return {
            "flushes": self.flushes,
            "datagrams_sent": sum(s.stats.datagrams_sent.value for s in self.sinks),
            "datagrams_dropped": sum(s.stats.datagrams_dropped.value for s in self.sinks),
        }


def _lines(
    fmt: StatsdFormat, counters: list[tuple[Counter, int]], gauges: list[Gauge], timers: list[Timer]
) -> Iterator[str]:
    for counter, increase in counters:
        yield fmt.counter(counter, increase)
    for gauge in gauges:
        yield fmt.gauge(gauge)
    for histogram, samples, recorded in timers:
        yield from fmt.timers(histogram, samples, recorded)


def take_samples(store: StatsStore) -> list[Timer]:
    """Every histogram's samples since the last call (a store that keeps them)."""
    return [(h, *h.take_samples()) for h in store if isinstance(h, SampledHistogram)]


async def run_stats_flush(
    flusher: StatsFlusher, store: StatsStore, interval: float, *, counters_and_gauges: bool
) -> None:
    """The `stats flush` task of a gateway process: every `interval`, its histograms'
    samples and, unless a supervisor sends them for all workers, its counters and
    gauges. When cancelled (the gateway stops) it flushes once more, so what was counted
    since the last flush is not lost."""
    annotate(
        "stats flush",
        live=flusher.task_fields,
        sinks=", ".join(str(s) for s in flusher.sinks),
        interval_s=interval,
    )

    def flush() -> None:
        sources = [("gateway", store.export())] if counters_and_gauges else []
        flusher.flush(sources, take_samples(store))

    try:
        while True:
            await flusher.connect()
            await trio.sleep(interval)
            flush()
    finally:
        flush()
        flusher.close()
