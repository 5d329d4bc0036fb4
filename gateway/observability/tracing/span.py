"""The span model: one timed piece of the gateway's work on a request, in a tree.

A request that is sampled gets a SERVER span when its head arrives; its pieces are child
spans: the filters that took time, each upstream attempt (a CLIENT span) and, inside an
attempt, the wait for a pooled connection, a tunnel's life. A span is handed to its
trace's sink (the exporter's buffer) when it ends, so ending costs an append and nothing
waits for the collector.

Timestamps are wall-clock nanoseconds, as OTLP wants, taken from a monotonic clock anchored
to the wall clock once: a child's times then always fall within its parent's, whatever NTP
does to the wall clock meanwhile.
"""

import enum
import time
from typing import Protocol

from gateway.protocol.trace_context import Propagation, new_span_id

#: What OTLP can carry as a scalar attribute value.
AttributeValue = str | int | float | bool

#: Wall-clock nanoseconds minus the monotonic clock's, taken once per process.
_EPOCH_OFFSET_NS = time.time_ns() - time.perf_counter_ns()


def now_ns() -> int:
    """Nanoseconds since the epoch, advancing monotonically."""
    return _EPOCH_OFFSET_NS + time.perf_counter_ns()


class SpanKind(enum.IntEnum):
    """OTLP's Span.SpanKind numbers."""

    INTERNAL = 1
    SERVER = 2
    CLIENT = 3


class SpanSink(Protocol):
    """Where ended spans go (the exporter's buffer)."""

    def record(self, span: "Span") -> None: ...


class Trace:
    """What every span of one request shares: the trace id, the client's `tracestate`, the
    headers the trace came in (and so goes out) with, and where ended spans go."""

    __slots__ = ("propagation", "sink", "trace_id", "trace_state")

    def __init__(
        self,
        trace_id: str,
        sink: SpanSink,
        propagation: Propagation = Propagation.W3C,
        trace_state: str | None = None,
    ) -> None:
        self.trace_id = trace_id
        self.sink = sink
        self.propagation = propagation
        self.trace_state = trace_state


class Span:
    """One span; `end()` hands it to its trace's sink (again: nothing)."""

    __slots__ = (
        "attributes",
        "end_ns",
        "error",
        "kind",
        "message",
        "name",
        "parent_id",
        "span_id",
        "start_ns",
        "trace",
    )

    def __init__(
        self,
        trace: Trace,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        parent_id: str = "",
        start_ns: int = 0,
    ) -> None:
        self.trace = trace
        self.span_id = new_span_id()
        #: "" for a root span (the request came without a trace).
        self.parent_id = parent_id
        self.name = name
        self.kind = kind
        self.start_ns = start_ns or now_ns()
        self.end_ns = 0
        self.attributes: dict[str, AttributeValue] = {}
        #: OTLP status ERROR, with its message; otherwise the status is left unset.
        self.error = False
        self.message = ""

    def __repr__(self) -> str:
        return f"<Span {self.name!r} {self.kind.name} {self.trace.trace_id}/{self.span_id}>"

    def child(self, name: str, kind: SpanKind = SpanKind.INTERNAL, start_ns: int = 0) -> "Span":
        return Span(self.trace, name, kind, self.span_id, start_ns)

    def fail(self, error_type: str, message: str = "") -> None:
        """Marks the span failed: status ERROR and `error.type`, as the conventions ask."""
        self.error = True
        self.message = message
        self.attributes["error.type"] = error_type

    def end(self, end_ns: int = 0) -> None:
        if self.end_ns:
            return
        self.end_ns = end_ns or now_ns()
        self.trace.sink.record(self)
