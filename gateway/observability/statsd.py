"""The statsd and DogStatsD line formats, as Envoy's stats sinks write them, and the packing
of lines into datagrams. Pure: stats_sink.py sends them.

    envoy.cluster.api.upstream_rq_total:3|c                          statsd: the dotted name
    envoy.cluster.upstream_rq_total:3|c|#envoy.cluster_name:api      DogStatsD: tag-extracted

Counters go as the count since the last flush (`|c`), gauges as their value (`|g`), and
histograms as their samples in milliseconds (`|ms`, statsd's timers), as Envoy sends them.
A histogram that recorded more samples than a flush carries sends a uniform choice of them
with statsd's sample rate (`|@0.25`), so the receiver's counts stay right.
"""

import re
from collections.abc import Iterable, Iterator

import attrs

from gateway.observability.stats import Counter, Gauge, Histogram, Stat

#: statsd's own syntax, which a name or tag value must not carry (a cluster's name may).
_UNSAFE = re.compile(r"[:|@#,\s]")


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text)


def _tag_name(label: str) -> str:
    # The gateway's tags are Prometheus' spelling of Envoy's (`envoy.cluster_name`).
    return "envoy." + label[6:] if label.startswith("envoy_") else label


def milliseconds(value: float) -> str:
    """A sample as statsd reads it: a plain decimal (no exponent), to the microsecond."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


@attrs.frozen
class StatsdFormat:
    """One sink's lines: `prefix.NAME:VALUE|TYPE`, and with `tagged` (DogStatsD) the
    tag-extracted name followed by `|#tag:value,...`."""

    prefix: str
    tagged: bool

    def line(self, stat: Stat, value: str, kind: str, rate: str = "") -> str:
        if not self.tagged:
            return f"{self.prefix}.{_safe(stat.name)}:{value}|{kind}{rate}"
        tags = ",".join(f"{_tag_name(k)}:{_safe(v)}" for k, v in stat.labels.items())
        return f"{self.prefix}.{_safe(stat.tag_name)}:{value}|{kind}{rate}" + (
            f"|#{tags}" if tags else ""
        )

    def counter(self, stat: Counter, delta: int) -> str:
        return self.line(stat, str(delta), "c")

    def gauge(self, stat: Gauge) -> str:
        # A leading sign makes a statsd gauge relative; the gateway's gauges never go
        # below 0 but by a bug, which must not turn into a relative change.
        return self.line(stat, str(max(stat.value, 0)), "g")

    def timers(self, stat: Histogram, samples: list[float], recorded: int) -> Iterator[str]:
        """`samples` of the `recorded` since the last flush."""
        rate = f"|@{len(samples) / recorded:.6g}" if recorded > len(samples) else ""
        for sample in samples:
            yield self.line(stat, milliseconds(sample), "ms", rate)


def datagrams(lines: Iterable[str], max_bytes: int) -> Iterator[bytes]:
    """Lines joined by newlines into datagrams of at most `max_bytes`; a longer line goes
    alone (as Envoy's sink sends it)."""
    batch: list[bytes] = []
    size = 0
    for line in lines:
        data = line.encode()
        if batch and size + 1 + len(data) > max_bytes:
            yield b"\n".join(batch)
            batch, size = [], 0
        if len(data) >= max_bytes:
            yield data
            continue
        size += len(data) + (1 if batch else 0)
        batch.append(data)
    if batch:
        yield b"\n".join(batch)
