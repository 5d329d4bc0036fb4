"""Ended spans waiting for the exporter: a bounded buffer that never makes a request wait.

A span that ends while the buffer holds `capacity` spans is dropped and counted
(`tracing.opentelemetry.spans_dropped`), as Envoy's tracer drops past its
`max_cache_size`: when the collector is slow or down, the spans pile up only this far,
and the requests they describe go on at full speed. The exporter is woken once
`min_flush_spans` are waiting (Envoy's `tracing.opentelemetry.min_flush_spans`), and
otherwise by its flush timer.
"""

import trio

from gateway.observability.stats import Counter
from gateway.observability.tracing.span import Span


class SpanBuffer:
    __slots__ = ("_capacity", "_dropped", "_min_flush", "_ready", "_spans")

    def __init__(self, capacity: int, min_flush: int, dropped: Counter) -> None:
        self._spans: list[Span] = []
        self._capacity = capacity
        self._min_flush = min_flush
        self._dropped = dropped
        self._ready = trio.Event()

    def __len__(self) -> int:
        return len(self._spans)

    def record(self, span: Span) -> None:
        """A span ended (SpanSink); O(1), never waits."""
        spans = self._spans
        if len(spans) >= self._capacity:
            self._dropped.inc()
            return
        spans.append(span)
        if len(spans) >= self._min_flush:
            self._ready.set()

    def drop(self, count: int) -> None:
        """Spans taken that never reached the collector (a failed export) count as dropped."""
        self._dropped.inc(count)

    async def wait(self) -> None:
        """Waits until `min_flush_spans` spans wait."""
        await self._ready.wait()

    def take(self, limit: int) -> list[Span]:
        """Up to `limit` spans, oldest first, for one export."""
        batch, self._spans = self._spans[:limit], self._spans[limit:]
        if len(self._spans) < self._min_flush and self._ready.is_set():
            self._ready = trio.Event()
        return batch
