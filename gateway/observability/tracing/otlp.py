"""Spans as OTLP messages: one ExportTraceServiceRequest per batch, the same bytes over
OTLP/HTTP and OTLP/gRPC. The messages are opentelemetry-proto's generated classes (no SDK).

Encoding runs in the exporter's task, never on a request's path, a slice of spans at a
time so that requests run in between. Setting a span's fields one by one through the
generated classes costs some 12 µs a span, mostly in the attributes (a KeyValue and an
AnyValue object each); so each span is written in protobuf's wire format here, with the
attributes that repeat from request to request (method, scheme, route, cluster, status,
...) encoded once and kept, and the slice is merged into the request's ScopeSpans, where
protobuf's C parser takes it: about half the cost. Span fields and numbers are
opentelemetry/proto/trace/v1/trace.proto's; the unit tests decode what this writes with
the generated classes.
"""

import struct
from collections.abc import Mapping, Sequence

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans

from gateway.observability.tracing.span import AttributeValue, Span, SpanKind

#: Span.flags: the W3C sampled bit, and "the parent's remoteness is known" (0x100) with
#: "the parent is remote" (0x200): a SERVER span's parent is the client's span.
_SAMPLED, _HAS_IS_REMOTE, _IS_REMOTE = 0x01, 0x100, 0x200
_FIXED32 = struct.Struct("<I").pack
_FIXED64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack
#: Encoded attributes kept for reuse, at most this many (then the cache starts afresh).
_CACHE_SIZE = 4096
#: Attributes new on every request: never kept.
_UNIQUE = frozenset({"gateway.request_id"})
_kv_cache: dict[tuple[str, type, AttributeValue], bytes] = {}


def resource(attributes: Mapping[str, AttributeValue]) -> Resource:
    """What every span of this process is from (service.name, service.instance.id, ...)."""
    message = Resource()
    for key, value in attributes.items():
        entry = message.attributes.add()
        entry.key = key
        _set_value(entry.value, value)
    return message


def export_request(
    origin: Resource, scope: str, version: str
) -> tuple[ExportTraceServiceRequest, ScopeSpans]:
    """An empty request from this process, and where its spans go (`add_spans`)."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.CopyFrom(origin)
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = scope
    scope_spans.scope.version = version
    return request, scope_spans


def add_spans(target: ScopeSpans, spans: Sequence[Span]) -> None:
    """Appends `spans` to `target` (ScopeSpans.spans, field 2)."""
    target.MergeFromString(b"".join([_field(b"\x12", _span(span)) for span in spans]))


def _span(span: Span) -> bytes:
    trace = span.trace
    parts = [
        b"\x0a\x10" + bytes.fromhex(trace.trace_id),  # 1 trace_id
        b"\x12\x08" + bytes.fromhex(span.span_id),  # 2 span_id
        _field(b"\x2a", span.name.encode()),  # 5 name
        b"\x30" + bytes((span.kind,)),  # 6 kind
        b"\x39" + _FIXED64(span.start_ns),  # 7 start_time_unix_nano
        b"\x41" + _FIXED64(span.end_ns),  # 8 end_time_unix_nano
    ]
    if trace.trace_state:
        parts.append(_field(b"\x1a", trace.trace_state.encode()))  # 3 trace_state
    remote = 0
    if span.parent_id:
        parts.append(b"\x22\x08" + bytes.fromhex(span.parent_id))  # 4 parent_span_id
        remote = _IS_REMOTE if span.kind is SpanKind.SERVER else 0
    parts.append(b"\x85\x01" + _FIXED32(_SAMPLED | _HAS_IS_REMOTE | remote))  # 16 flags
    parts.extend([_attribute(key, value) for key, value in span.attributes.items()])  # 9
    if span.error:  # 15 status: message (2), code (3) ERROR
        parts.append(_field(b"\x7a", _field(b"\x12", span.message.encode()) + b"\x18\x02"))
    return b"".join(parts)


def _attribute(key: str, value: AttributeValue) -> bytes:
    """Span.attributes (field 9): one KeyValue{key = 1, value = 2}."""
    cache_key = (key, type(value), value)
    encoded = _kv_cache.get(cache_key)
    if encoded is None:
        encoded = _field(b"\x4a", _field(b"\x0a", key.encode()) + _field(b"\x12", _any(value)))
        if key not in _UNIQUE:
            if len(_kv_cache) >= _CACHE_SIZE:
                _kv_cache.clear()
            _kv_cache[cache_key] = encoded
    return encoded


def _any(value: AttributeValue) -> bytes:
    """AnyValue: string_value = 1, bool_value = 2, int_value = 3, double_value = 4."""
    # bool first: it is an int too.
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int) and -(1 << 63) <= value < 1 << 63:
        return b"\x18" + _varint(value & 0xFFFF_FFFF_FFFF_FFFF)  # int64: two's complement
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    return _field(b"\x0a", str(value).encode())


def _field(tag: bytes, data: bytes) -> bytes:
    """A length-delimited field."""
    return tag + _varint(len(data)) + data


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def accepted(response: bytes, sent: int) -> int:
    """How many of `sent` spans the collector took: all, unless its answer reports a
    partial success (OTLP: `rejected_spans`). An answer that does not parse takes all:
    the export itself succeeded."""
    try:
        answer = ExportTraceServiceResponse.FromString(response)
    except DecodeError:
        return sent
    return max(sent - answer.partial_success.rejected_spans, 0)


def _set_value(target: AnyValue, value: AttributeValue) -> None:
    # bool first: it is an int too.
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    else:
        target.string_value = value
