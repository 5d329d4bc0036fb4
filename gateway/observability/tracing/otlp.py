"""Spans as OTLP messages (opentelemetry-proto's generated classes; no SDK): one
ExportTraceServiceRequest per batch, the same bytes over OTLP/HTTP and OTLP/gRPC.

Encoding runs in the exporter's task, never on a request's path, a few spans at a time
(`add_spans`) so that the exporter can let requests run in between: a span takes some
10 µs to encode, a batch of 512 several milliseconds.
"""

from collections.abc import Mapping, Sequence

from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from gateway.observability.tracing.span import AttributeValue, Span, SpanKind

#: Span.flags: the W3C sampled bit, and "the parent's remoteness is known" (0x100) with
#: "the parent is remote" (0x200): a SERVER span's parent is the client's span.
_SAMPLED, _HAS_IS_REMOTE, _IS_REMOTE = 0x01, 0x100, 0x200


def resource(attributes: Mapping[str, AttributeValue]) -> Resource:
    """What every span of this process is from (service.name, service.instance.id, ...)."""
    message = Resource()
    _add_attributes(message.attributes, attributes)
    return message


def export_request(
    origin: Resource, scope: str, version: str
) -> tuple[ExportTraceServiceRequest, RepeatedCompositeFieldContainer[OtlpSpan]]:
    """An empty request from this process, and the list its spans go in (`add_spans`)."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.CopyFrom(origin)
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = scope
    scope_spans.scope.version = version
    return request, scope_spans.spans


def add_spans(target: RepeatedCompositeFieldContainer[OtlpSpan], spans: Sequence[Span]) -> None:
    for span in spans:
        out = target.add()
        trace = span.trace
        out.trace_id = bytes.fromhex(trace.trace_id)
        out.span_id = bytes.fromhex(span.span_id)
        if span.parent_id:
            out.parent_span_id = bytes.fromhex(span.parent_id)
        if trace.trace_state:
            out.trace_state = trace.trace_state
        remote = _IS_REMOTE if span.kind is SpanKind.SERVER and span.parent_id else 0
        out.flags = _SAMPLED | _HAS_IS_REMOTE | remote
        out.name = span.name
        out.kind = int(span.kind)  # type: ignore[assignment]  # the same numbers
        out.start_time_unix_nano = span.start_ns
        out.end_time_unix_nano = span.end_ns
        _add_attributes(out.attributes, span.attributes)
        if span.error:
            out.status.code = Status.STATUS_CODE_ERROR
            out.status.message = span.message


def accepted(response: bytes, sent: int) -> int:
    """How many of `sent` spans the collector took: all, unless its answer reports a
    partial success (OTLP: `rejected_spans`). An answer that does not parse takes all:
    the export itself succeeded."""
    try:
        answer = ExportTraceServiceResponse.FromString(response)
    except DecodeError:
        return sent
    return max(sent - answer.partial_success.rejected_spans, 0)


def _add_attributes(
    target: RepeatedCompositeFieldContainer[KeyValue], attributes: Mapping[str, AttributeValue]
) -> None:
    for key, value in attributes.items():
        entry = target.add()
        entry.key = key
        _set_value(entry.value, value)


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
