"""Trace context on the wire: W3C Trace Context (`traceparent`, `tracestate`) and Zipkin's
B3, as one `b3` header or as the `x-b3-*` headers. Read from the request a client sent,
written into the request the gateway sends on. Sans-IO: headers in, headers out.

Ids are lower-case hex strings, as they travel: a request's trace id and its caller's span
id pass through the gateway untouched, and only the exporter, off the request path, turns
them into bytes. B3's 64-bit trace ids are widened to 128 bits (zeros in front), as
OpenTelemetry's B3 propagator does, so every trace id is 32 digits.

W3C wins when a request carries both. `tracestate` is never rewritten: it passes with the
request as any header does. A B3 header that carries only a sampling decision (`b3: 0`)
names no trace, and is ignored as OpenTelemetry's propagator ignores it.
"""

import enum
import random
import re
from typing import NamedTuple

from gateway.protocol.headers import HeaderMap

#: version-traceid-parentid-flags, lower-case hex (W3C Trace Context 3.2).
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
#: traceid-spanid[-sampling[-parentspanid]] (B3 single header); sampling 0, 1 or d(ebug).
_B3 = re.compile(r"^([0-9a-f]{32}|[0-9a-f]{16})-([0-9a-f]{16})(?:-([01d])(?:-[0-9a-f]{16})?)?$")
_B3_TRACE_ID = re.compile(r"^(?:[0-9a-f]{32}|[0-9a-f]{16})$")
_B3_SPAN_ID = re.compile(r"^[0-9a-f]{16}$")
#: X-B3-Sampled values (`true`/`false` from B3's early days, still sent by old clients).
_B3_SAMPLED = {"1": True, "true": True, "0": False, "false": False}
#: The headers of the multi-header form that the gateway rewrites or drops when it passes
#: a trace on: a client's parent span id would name the wrong span one hop later.
_B3_MULTI_STALE = ("x-b3-parentspanid", "x-b3-flags")


class Propagation(enum.Enum):
    """Which headers carried a trace in, and so go out again besides `traceparent`."""

    W3C = "w3c"
    B3 = "b3"
    B3_MULTI = "b3multi"


class TraceContext(NamedTuple):
    """What a client said about the trace its request belongs to."""

    trace_id: str
    #: The client's span: the parent of the gateway's.
    span_id: str
    #: The client's sampling decision; None when it left it to the gateway (B3 may).
    sampled: bool | None
    propagation: Propagation
    #: W3C `tracestate`, vendors' own entries, reported with the spans as they came.
    trace_state: str | None = None


def new_trace_id() -> str:
    """A random, non-zero 128-bit trace id (it needs to be unique, not unguessable)."""
    return f"{random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


def parse_traceparent(value: str) -> tuple[str, str, str] | None:
    """A valid `traceparent`'s trace id, parent id and flags (hex); None if it is not one:
    version ff, an all-zero id, or a version 00 header with more than four fields."""
    m = _TRACEPARENT.match(value)
    if m and m[1] != "ff" and m[2].strip("0") and m[3].strip("0") and (m[1] != "00" or not m[5]):
        return m[2], m[3], m[4]
    return None


def format_traceparent(trace_id: str, span_id: str, flags: str) -> str:
    return f"00-{trace_id}-{span_id}-{flags}"


def extract(headers: HeaderMap) -> TraceContext | None:
    """The trace a request belongs to, from `traceparent`, else `b3`, else `x-b3-*`."""
    value = headers.get("traceparent")
    if value is not None and (parsed := parse_traceparent(value)) is not None:
        trace_id, span_id, flags = parsed
        return TraceContext(
            trace_id,
            span_id,
            bool(int(flags, 16) & 1),
            Propagation.W3C,
            headers.get("tracestate"),
        )
    value = headers.get("b3")
    if value is not None:
        m = _B3.match(value)
        if m and m[1].strip("0") and m[2].strip("0"):
            sampled = None if m[3] is None else m[3] != "0"
            return TraceContext(m[1].rjust(32, "0"), m[2], sampled, Propagation.B3)
        return None
    return _extract_b3_multi(headers)


def _extract_b3_multi(headers: HeaderMap) -> TraceContext | None:
    trace_id, span_id = headers.get("x-b3-traceid"), headers.get("x-b3-spanid")
    if trace_id is None or span_id is None:
        return None
    if not (_B3_TRACE_ID.match(trace_id) and trace_id.strip("0")):
        return None
    if not (_B3_SPAN_ID.match(span_id) and span_id.strip("0")):
        return None
    sampled = _B3_SAMPLED.get((headers.get("x-b3-sampled") or "").lower())
    if headers.get("x-b3-flags") == "1":  # debug: always sampled
        sampled = True
    return TraceContext(trace_id.rjust(32, "0"), span_id, sampled, Propagation.B3_MULTI)


def inject(
    headers: HeaderMap,
    trace_id: str,
    span_id: str,
    sampled: bool,
    propagation: Propagation = Propagation.W3C,
) -> None:
    """Names `span_id` as the parent of whatever the receiver does next: `traceparent`
    always, and B3 in the form the client used, if it used B3."""
    headers.set("traceparent", format_traceparent(trace_id, span_id, "01" if sampled else "00"))
    if propagation is Propagation.B3:
        headers.set("b3", f"{trace_id}-{span_id}-{'1' if sampled else '0'}")
    elif propagation is Propagation.B3_MULTI:
        headers.remove_names(_B3_MULTI_STALE)
        headers.set("x-b3-traceid", trace_id)
        headers.set("x-b3-spanid", span_id)
        headers.set("x-b3-sampled", "1" if sampled else "0")
