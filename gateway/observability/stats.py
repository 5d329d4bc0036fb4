"""Counters, gauges and histograms with Envoy's names, and their exposition formats.

Each stat has a dotted Envoy name (`cluster.api.upstream_rq_total`) and the tag-extracted
form Envoy produces: a name without the component's own name (`cluster.upstream_rq_total`)
plus tags (`envoy_cluster_name="api"`). Prometheus gets the latter as
`envoy_cluster_upstream_rq_total{envoy_cluster_name="api"}`, DogStatsD as
`cluster.upstream_rq_total` with `#envoy.cluster_name:api`. Components take a `Scope` and
create their stats once; the hot path only does `c.value += 1`.

What each stat family means, for Prometheus' `# HELP`, is described where the stats are
defined: each module hands its table to `describe` (Envoy's stats carry no description;
Prometheus clients keep one per family).
"""

import bisect
import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from gateway.config.regex import Regex

T = TypeVar("T")

#: Envoy's default histogram bucket bounds (milliseconds for time histograms).
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000,
    600000, 1800000, 3600000,
)  # fmt: skip
#: The quantiles /stats prints for each histogram, as Envoy does.
QUANTILES: tuple[float, ...] = (0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1)
#: What a stats sink receives of one histogram per flush, at most: samples beyond are
#: sampled (a reservoir), and the sink says at which rate, so counts stay right.
MAX_SAMPLES_PER_FLUSH = 1000

#: Prometheus `# HELP` text by tag-extracted name (`cluster.upstream_rq_total`).
_HELP: dict[str, str] = {}


def describe(tag_prefix: str, texts: Mapping[str, str]) -> None:
    """Registers what the stats of a component mean, by their tag-extracted name under
    `tag_prefix` (`describe("cluster", {"upstream_rq_total": "..."})`); one short line
    each, shown as Prometheus' `# HELP`."""
    for stat, text in texts.items():
        _HELP[f"{tag_prefix}.{stat}"] = text


def help_text(tag_name: str) -> str | None:
    return _HELP.get(tag_name)


class _Named:
    """What every stat has: its dotted name, tag-extracted name and tags."""

    __slots__ = ()
    name: str
    tag_name: str
    labels: dict[str, str]

    @property
    def prom_name(self) -> str:
        # Envoy's Prometheus names are the tag-extracted names with underscores.
        return "envoy_" + self.tag_name.replace(".", "_")


@attrs.define(eq=False)
class Counter(_Named):
    name: str
    tag_name: str
    labels: dict[str, str]
    value: int = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


@attrs.define(eq=False)
class Gauge(_Named):
    name: str
    tag_name: str
    labels: dict[str, str]
    value: int = 0

    def inc(self) -> None:
        self.value += 1

    def dec(self) -> None:
        self.value -= 1


@attrs.define(eq=False)
class Histogram(_Named):
    name: str
    tag_name: str
    labels: dict[str, str]
    bounds: tuple[float, ...] = DEFAULT_BUCKETS
    #: counts[i] counts samples <= bounds[i]; the last slot counts samples above every bound.
    counts: list[int] = attrs.field(init=False)
    sum: float = 0.0
    count: int = 0
    max: float = 0.0

    def __attrs_post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def record(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1
        self.max = max(self.max, value)

    def quantile(self, q: float) -> float:
        """Estimates a quantile by linear interpolation inside its bucket."""
        return bucket_quantile(self.bounds, self.counts, q, self.max)


@attrs.define(eq=False)
class SampledHistogram(Histogram):
    """A histogram that also keeps its samples until a stats sink takes them (Envoy
    hands each sample to its sinks as it is recorded): at most MAX_SAMPLES_PER_FLUSH of
    them, a uniform choice (reservoir sampling) when there were more. Only a gateway with
    `[[stats_sinks]]` makes these; the others pay nothing."""

    samples: list[float] = attrs.field(init=False, factory=list)
    #: `count` when the samples were last taken.
    taken_at: int = attrs.field(init=False, default=0)

    def record(self, value: float) -> None:
        super().record(value)
        samples = self.samples
        if len(samples) < MAX_SAMPLES_PER_FLUSH:
            samples.append(value)
        else:
            slot = random.randrange(self.count - self.taken_at)
            if slot < MAX_SAMPLES_PER_FLUSH:
                samples[slot] = value

    def take_samples(self) -> tuple[list[float], int]:
        """The samples kept since the last call, and how many were recorded meanwhile."""
        samples, self.samples = self.samples, []
        recorded, self.taken_at = self.count - self.taken_at, self.count
        return samples, recorded


def bucket_quantile(bounds: Sequence[float], counts: Sequence[int], q: float, top: float) -> float:
    """A quantile of samples counted in buckets (`counts[i]` <= `bounds[i]`, the last slot
    above every bound), interpolated inside its bucket and never above `top`, the largest
    sample (or a bound on it); NaN without samples."""
    total = sum(counts)
    if not total:
        return math.nan
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            lower = bounds[i - 1] if i else 0.0
            upper = bounds[i] if i < len(bounds) else top
            return min(lower + (upper - lower) * (rank - seen) / n, top)
        seen += n
    return top


Stat = Counter | Gauge | Histogram


class StatsStore:
    """All of one gateway's stats, by dotted name. `buckets` maps name patterns to bucket
    bounds for histograms (the first pattern found in a name wins; else Envoy's). With
    `keep_samples` histograms keep their samples for a stats sink (SampledHistogram)."""

    def __init__(
        self,
        buckets: Sequence[tuple[Regex, tuple[float, ...]]] = (),
        *,
        keep_samples: bool = False,
    ) -> None:
        self._stats: dict[str, Stat] = {}
        self._buckets = list(buckets)
        self._histogram = SampledHistogram if keep_samples else Histogram

    def scope(self, prefix: str, tag_prefix: str, labels: dict[str, str] | None = None) -> "Scope":
        """Stats named `prefix.STAT`, tag-extracted as `tag_prefix.STAT` with `labels`
        (without labels, name the prefix itself: nothing is extracted)."""
        return Scope(self, prefix, tag_prefix, labels or {})

    def _get(self, kind: type[Stat], name: str, tag_name: str, labels: dict[str, str]) -> Stat:
        stat = self._stats.get(name)
        if stat is None:
            if kind is Histogram:
                bounds = next((b for p, b in self._buckets if p.search(name)), DEFAULT_BUCKETS)
                stat = self._stats[name] = self._histogram(name, tag_name, labels, bounds)
            else:
                stat = self._stats[name] = kind(name, tag_name, labels)
        assert isinstance(stat, kind), f"{name} is a {type(stat).__name__}"
        return stat

    def __iter__(self) -> Iterator[Stat]:
        return iter(sorted(self._stats.values(), key=lambda s: s.name))

    def value(self, name: str) -> int | None:
        """A counter's or gauge's value by dotted name (None if it does not exist)."""
        stat = self._stats.get(name)
        return stat.value if isinstance(stat, Counter | Gauge) else None

    def histogram(self, name: str) -> "Histogram | None":
        stat = self._stats.get(name)
        return stat if isinstance(stat, Histogram) else None

    def reset_counters(self) -> int:
        """Sets every counter to 0, as Envoy's /reset_counters (gauges and histograms are
        left alone); returns how many there are."""
        counters = [s for s in self._stats.values() if isinstance(s, Counter)]
        for counter in counters:
            counter.value = 0
        return len(counters)

    def export(self) -> list[dict[str, object]]:
        """Every stat as plain data, histograms with their buckets: what a worker process
        hands the supervisor, which adds them up (`merge`)."""
        rows: list[dict[str, object]] = []
        for stat in self._stats.values():
            row: dict[str, object] = {
                "kind": "Histogram" if isinstance(stat, Histogram) else type(stat).__name__,
                "name": stat.name,
                "tag_name": stat.tag_name,
                "labels": stat.labels,
            }
            if isinstance(stat, Histogram):
                row.update(bounds=stat.bounds, counts=stat.counts, sum=stat.sum, max=stat.max)
            else:
                row["value"] = stat.value
            rows.append(row)
        return rows

    def merge(self, rows: list[dict[str, Any]]) -> None:
        """Adds another process's `export` into this store, as Envoy sums its workers:
        counters and gauges add up; histograms add bucket by bucket."""
        kinds: dict[str, type[Stat]] = {"Counter": Counter, "Gauge": Gauge, "Histogram": Histogram}
        for row in rows:
            kind = kinds[row["kind"]]
            if kind is Histogram and row["name"] not in self._stats:
                self._stats[row["name"]] = Histogram(
                    row["name"], row["tag_name"], row["labels"], tuple(row["bounds"])
                )
            stat = self._get(kind, row["name"], row["tag_name"], row["labels"])
            if isinstance(stat, Histogram):
                if list(stat.bounds) != list(row["bounds"]):
                    continue  # configured differently (a reload in between): not addable
                stat.counts = [a + b for a, b in zip(stat.counts, row["counts"], strict=True)]
                stat.count = sum(stat.counts)
                stat.sum += row["sum"]
                stat.max = max(stat.max, row["max"])
            else:
                stat.value += row["value"]

    def select(self, name_filter: Regex | None = None, used_only: bool = False) -> list[Stat]:
        """Stats sorted by name, whose name the filter finds (a search), and with
        `used_only` only those that ever moved: non-zero counters and gauges, histograms
        with samples."""
        return [
            stat
            for stat in self
            if (name_filter is None or name_filter.search(stat.name))
            and (not used_only or (stat.count if isinstance(stat, Histogram) else stat.value))
        ]


@attrs.frozen
class Scope:
    """A stat name prefix plus the tags it implies (Envoy's Stats::Scope)."""

    store: StatsStore
    prefix: str
    tag_prefix: str
    labels: dict[str, str]

    def _names(self, name: str) -> tuple[str, str]:
        return f"{self.prefix}.{name}", f"{self.tag_prefix}.{name}"

    def child(self, name: str) -> "Scope":
        """A nested scope (`cluster.api` -> `cluster.api.outlier_detection`), same tags."""
        return Scope(self.store, f"{self.prefix}.{name}", f"{self.tag_prefix}.{name}", self.labels)

    def counter(self, name: str) -> Counter:
        stat = self.store._get(Counter, *self._names(name), self.labels)
        assert isinstance(stat, Counter)
        return stat

    def gauge(self, name: str) -> Gauge:
        stat = self.store._get(Gauge, *self._names(name), self.labels)
        assert isinstance(stat, Gauge)
        return stat

    def histogram(self, name: str) -> Histogram:
        stat = self.store._get(Histogram, *self._names(name), self.labels)
        assert isinstance(stat, Histogram)
        return stat


def create_stats(cls: type[T], scope: "Scope", **given: object) -> T:
    """Builds an attrs record of stats (ClusterStats, HcmStats, ...): every Counter, Gauge
    and Histogram field is created in `scope` under the field's own name; `given` supplies
    the remaining fields."""
    makers = {Counter: scope.counter, Gauge: scope.gauge, Histogram: scope.histogram}
    fields = attrs.fields(cls)  # type: ignore[arg-type]
    values = {f.name: makers[f.type](f.name) for f in fields if f.name not in given}
    return cls(**values, **given)


# --- exposition -----------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:.6g}"


def histogram_summary(h: Histogram) -> str:
    """Envoy's /stats line body: `P0(v) P25(v) ... P100(v)`."""
    return " ".join(f"P{q * 100:g}({_fmt(h.quantile(q))})" for q in QUANTILES)


def render_text(stats: Iterable[Stat]) -> str:
    lines = []
    for stat in stats:
        if isinstance(stat, Histogram):
            lines.append(f"{stat.name}: {histogram_summary(stat)}")
        else:
            lines.append(f"{stat.name}: {stat.value}")
    return "\n".join(lines) + "\n"


def render_json(stats: Iterable[Stat], buckets: bool = False) -> dict[str, object]:
    """`{"stats": [...]}`; with `buckets`, histograms also carry their cumulative bucket
    counts (Envoy's `histogram_buckets=cumulative`), from which rates over an interval
    can be computed."""
    out: list[dict[str, object]] = []
    for stat in stats:
        if isinstance(stat, Histogram):
            histogram: dict[str, object] = {
                "count": stat.count,
                "sum": stat.sum,
                # JSON has no NaN: an empty histogram's quantiles are null.
                "quantiles": {
                    f"P{q * 100:g}": None if math.isnan(v := stat.quantile(q)) else v
                    for q in QUANTILES
                },
            }
            if buckets:
                histogram["buckets"] = [
                    {"upper_bound": b, "cumulative_count": n}
                    for b, n in zip(stat.bounds, itertools.accumulate(stat.counts), strict=False)
                ]
            out.append({"name": stat.name, "histogram": histogram})
        else:
            out.append({"name": stat.name, "value": stat.value})
    return {"stats": out}


def _labels(labels: dict[str, str], extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels.items()]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _help_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def render_prometheus(stats: Iterable[Stat]) -> str:
    """Prometheus text exposition format 0.0.4, a HELP and a TYPE line per metric family.
    Counters keep Envoy's names, without the `_total` Prometheus' conventions ask for (as
    Envoy's own /stats/prometheus does: dashboards written for Envoy work as they are)."""
    families: dict[str, list[Stat]] = {}
    for stat in stats:
        families.setdefault(stat.prom_name, []).append(stat)
    out: list[str] = []
    for family, stats in sorted(families.items()):
        first = stats[0]
        kind = "histogram" if isinstance(first, Histogram) else type(first).__name__.lower()
        # A family nobody described still says which Envoy stat it is.
        text = help_text(first.tag_name) or first.tag_name
        out.append(f"# HELP {family} {_help_escape(text)}")
        out.append(f"# TYPE {family} {kind}")
        for stat in stats:
            if isinstance(stat, Histogram):
                cumulative = 0
                for bound, n in zip((*stat.bounds, math.inf), stat.counts, strict=True):
                    cumulative += n
                    le = 'le="' + ("+Inf" if bound == math.inf else _fmt(bound)) + '"'
                    out.append(f"{family}_bucket{_labels(stat.labels, le)} {cumulative}")
                out.append(f"{family}_sum{_labels(stat.labels)} {stat.sum!r}")
                out.append(f"{family}_count{_labels(stat.labels)} {stat.count}")
            else:
                out.append(f"{family}{_labels(stat.labels)} {stat.value}")
    return "\n".join(out) + "\n"
