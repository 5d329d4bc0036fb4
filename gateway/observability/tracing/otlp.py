"""Spans as OTLP messages: one ExportTraceServiceRequest per batch, the same bytes over
OTLP/HTTP and OTLP/gRPC, written in protobuf's wire format here.

Why by hand, not through opentelemetry-proto's generated classes: those classes live in
the `opentelemetry.proto` package, and xds-protos (the gateway's Envoy API dependency)
ships an older copy of the same files, so which of the two a fresh install ends up with
depends on the order pip installs them (the older one has no ScopeSpans). The wire format
is the same in both (ResourceSpans.scope_spans was instrumentation_library_spans, field
2, before), and it is all a collector reads. It is also cheaper: setting a span's fields
through the generated classes cost some 12 us a span, mostly in the attributes (a KeyValue
and an AnyValue object each); here each span is a few byte strings, with the attributes
that repeat from request to request (method, scheme, route, cluster, status, ...) encoded
once and kept. Encoding runs in the exporter's task, never on a request's path, a slice of
spans at a time so that requests run in between. Field names and numbers are
opentelemetry/proto/{collector/trace,trace,resource,common}/v1/*.proto's; the unit tests
decode what this writes with classes compiled from a .proto of those messages.
"""

import struct
from collections.abc import Mapping, Sequence

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


def resource(attributes: Mapping[str, AttributeValue]) -> bytes:
    """What every span of this process is from (service.name, service.instance.id, ...):
    a Resource, attributes = 1."""
    return b"".join(
        _field(b"\x0a", _field(b"\x0a", key.encode()) + _field(b"\x12", _any(value)))
        for key, value in attributes.items()
    )


def encode_spans(spans: Sequence[Span]) -> bytes:
    """`spans` as ScopeSpans.spans entries (field 2), to join into `export_request`."""
    return b"".join([_field(b"\x12", _span(span)) for span in spans])


def export_request(origin: bytes, scope: str, version: str, spans: bytes) -> bytes:
    """ExportTraceServiceRequest{resource_spans = 1: ResourceSpans{resource = 1,
    scope_spans = 2: ScopeSpans{scope = 1: InstrumentationScope{name = 1, version = 2},
    spans = 2 (`encode_spans`)}}}."""
    instrumentation = _field(b"\x0a", scope.encode()) + _field(b"\x12", version.encode())
    scope_spans = _field(b"\x0a", instrumentation) + spans
    return _field(b"\x0a", _field(b"\x0a", origin) + _field(b"\x12", scope_spans))


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
    partial success (ExportTraceServiceResponse.partial_success = 1:
    ExportTracePartialSuccess.rejected_spans = 1). An answer that does not parse takes
    all: the export itself succeeded."""
    try:
        partial = _length_delimited(response, 1)
        rejected = _varint_field(partial, 1) if partial is not None else 0
    except ValueError:
        return sent
    return max(sent - rejected, 0)


def _fields(message: bytes) -> list[tuple[int, int, int | bytes]]:
    """A message's top-level fields: (number, wire type, value). ValueError if truncated."""
    out: list[tuple[int, int, int | bytes]] = []
    at = 0
    while at < len(message):
        key, at = _read_varint(message, at)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, at = _read_varint(message, at)
        elif wire == 2:
            size, at = _read_varint(message, at)
            value, at = message[at : at + size], at + size
            if at > len(message):
                raise ValueError("truncated field")
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, at = int.from_bytes(message[at : at + width], "little"), at + width
        else:
            raise ValueError(f"wire type {wire}")
        out.append((number, wire, value))
    return out


def _length_delimited(message: bytes, number: int) -> bytes | None:
    values = [v for n, w, v in _fields(message) if n == number and w == 2]
    return values[-1] if values and isinstance(values[-1], bytes) else None


def _varint_field(message: bytes, number: int) -> int:
    values = [v for n, w, v in _fields(message) if n == number and w == 0]
    return values[-1] if values and isinstance(values[-1], int) else 0


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, at
