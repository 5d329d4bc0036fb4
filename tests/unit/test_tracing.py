"""Tracing without sockets: trace context headers (W3C, B3 single and multi), the sampler,
the semantic conventions' status rules, the span buffer's bounds, OTLP encoding, and
`[tracing]`'s validation."""

import pytest

from gateway.config.load import loads_config
from gateway.errors import ConfigError
from gateway.observability.stats import StatsStore
from gateway.observability.tracing import otlp, semconv
from gateway.observability.tracing.sampler import Sampler
from gateway.observability.tracing.span import Span, SpanKind, Trace
from gateway.observability.tracing.span_buffer import SpanBuffer
from gateway.protocol.headers import HeaderMap, RequestHead
from gateway.protocol.trace_context import Propagation, TraceContext, extract, inject
from tests.otlp_messages import (
    AnyValue,
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
    KeyValue,
)
from tests.otlp_messages import Span as OtlpSpan

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("headers", "context"),
    [
        (
            {"traceparent": f"00-{TRACE}-{SPAN}-01", "tracestate": "vendor=x"},
            TraceContext(TRACE, SPAN, True, Propagation.W3C, "vendor=x"),
        ),
        (
            {"traceparent": f"00-{TRACE}-{SPAN}-00"},
            TraceContext(TRACE, SPAN, False, Propagation.W3C),
        ),
        # A later version may carry more fields; version 00 may not.
        (
            {"traceparent": f"01-{TRACE}-{SPAN}-03-more"},
            TraceContext(TRACE, SPAN, True, Propagation.W3C),
        ),
        ({"traceparent": f"00-{TRACE}-{SPAN}-01-more"}, None),
        ({"traceparent": f"ff-{TRACE}-{SPAN}-01"}, None),
        ({"traceparent": f"00-{'0' * 32}-{SPAN}-01"}, None),
        ({"traceparent": f"00-{TRACE}-{'0' * 16}-01"}, None),
        ({"traceparent": f"00-{TRACE.upper()}-{SPAN}-01"}, None),
        ({"b3": f"{TRACE}-{SPAN}"}, TraceContext(TRACE, SPAN, None, Propagation.B3)),
        ({"b3": f"{TRACE}-{SPAN}-0"}, TraceContext(TRACE, SPAN, False, Propagation.B3)),
        ({"b3": f"{TRACE}-{SPAN}-d-{SPAN}"}, TraceContext(TRACE, SPAN, True, Propagation.B3)),
        (
            {"b3": f"{TRACE[16:]}-{SPAN}-1"},
            TraceContext("0" * 16 + TRACE[16:], SPAN, True, Propagation.B3),
        ),
        ({"b3": "1"}, None),  # a sampling decision alone names no trace
        ({"b3": f"{TRACE}-{SPAN}-x"}, None),
        (
            {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "true"},
            TraceContext(TRACE, SPAN, True, Propagation.B3_MULTI),
        ),
        (
            {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-flags": "1"},
            TraceContext(TRACE, SPAN, True, Propagation.B3_MULTI),
        ),
        (
            {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN},
            TraceContext(TRACE, SPAN, None, Propagation.B3_MULTI),
        ),
        ({"x-b3-traceid": TRACE}, None),
        ({"x-b3-traceid": "xyz", "x-b3-spanid": SPAN}, None),
        # W3C wins when both came.
        (
            {"b3": f"{'1' * 32}-{SPAN}-1", "traceparent": f"00-{TRACE}-{SPAN}-01"},
            TraceContext(TRACE, SPAN, True, Propagation.W3C),
        ),
    ],
)
def test_extract(headers, context):
    assert extract(HeaderMap(headers.items())) == context


def test_inject_keeps_the_form_the_trace_came_in():
    w3c = HeaderMap([("traceparent", "junk"), ("tracestate", "vendor=x")])
    inject(w3c, TRACE, "1111111111111111", True)
    assert list(w3c) == [
        ("tracestate", "vendor=x"),
        ("traceparent", f"00-{TRACE}-1111111111111111-01"),
    ]
    single = HeaderMap([("b3", f"{TRACE}-{SPAN}-1-{SPAN}")])
    inject(single, TRACE, "1111111111111111", False, Propagation.B3)
    assert single.get("b3") == f"{TRACE}-1111111111111111-0"
    assert single.get("traceparent") == f"00-{TRACE}-1111111111111111-00"
    stale = [("x-b3-parentspanid", SPAN), ("x-b3-flags", "1")]
    multi = HeaderMap([("x-b3-traceid", TRACE), ("x-b3-spanid", SPAN), *stale])
    inject(multi, TRACE, "1111111111111111", True, Propagation.B3_MULTI)
    assert dict(multi) == {
        "traceparent": f"00-{TRACE}-1111111111111111-01",
        "x-b3-traceid": TRACE,
        "x-b3-spanid": "1111111111111111",
        "x-b3-sampled": "1",
    }


def test_sampler():
    never, always, half = Sampler(0), Sampler(100), Sampler(50)
    assert not never.sample(None, False)
    assert never.sample(None, True)  # x-client-trace-id
    assert never.sample(True, False) and not always.sample(False, False)  # the caller's
    assert always.sample(None, False)
    share = sum(half.sample(None, False) for _ in range(4000)) / 4000
    assert 0.4 < share < 0.6


class Sink:
    def __init__(self) -> None:
        self.spans: list[Span] = []

    def record(self, span: Span) -> None:
        self.spans.append(span)


def span(kind: SpanKind) -> Span:
    return Span(Trace(TRACE, Sink()), "x", kind)


@pytest.mark.parametrize(
    ("kind", "status", "grpc_code", "error_type"),
    [
        (SpanKind.SERVER, 404, None, None),  # the client's doing
        (SpanKind.SERVER, 503, None, "503"),
        (SpanKind.CLIENT, 404, None, "404"),
        (SpanKind.CLIENT, 200, None, None),
        (SpanKind.SERVER, 200, 3, None),  # INVALID_ARGUMENT: the caller's fault
        (SpanKind.SERVER, 200, 14, "14"),  # UNAVAILABLE
        (SpanKind.CLIENT, 200, 3, "3"),
        (SpanKind.CLIENT, 200, 0, None),
    ],
)
def test_span_status_follows_the_conventions(kind, status, grpc_code, error_type):
    s = span(kind)
    semconv.record_response(s, status, grpc_code)
    assert s.error == (error_type is not None)
    assert s.attributes.get("error.type") == error_type
    assert s.attributes["http.response.status_code"] == status


def test_request_attributes():
    head = RequestHead("POST", "/pkg.Svc/Call?x=1", "[::1]:8443", "https", HeaderMap(), "2")
    assert semconv.request_attributes(head, grpc_call=True) == {
        "http.request.method": "POST",
        "url.path": "/pkg.Svc/Call",
        "url.scheme": "https",
        "network.protocol.version": "2",
        "server.address": "::1",
        "server.port": 8443,
        "rpc.system": "grpc",
        "rpc.service": "pkg.Svc",
        "rpc.method": "Call",
    }
    assert semconv.span_name(head, grpc_call=True) == "pkg.Svc/Call"
    assert semconv.span_name(head, grpc_call=False) == "POST"


def test_the_span_buffer_is_bounded_and_counts_what_it_drops():
    store = StatsStore()
    dropped = store.scope("t", "t").counter("spans_dropped")
    buffer = SpanBuffer(capacity=3, min_flush=2, dropped=dropped)
    trace = Trace(TRACE, buffer)
    for _ in range(5):
        Span(trace, "x").end()
    assert len(buffer) == 3 and dropped.value == 2
    assert len(buffer.take(2)) == 2 and len(buffer) == 1
    buffer.drop(2)  # an export that failed
    assert dropped.value == 4


def test_otlp_encoding():
    sink = Sink()
    server = Span(Trace(TRACE, sink, trace_state="vendor=x"), "GET", SpanKind.SERVER, SPAN)
    server.attributes.update({"s": "v", "i": 7, "f": 0.5, "b": True})
    child = server.child("pool wait")
    child.fail("UpstreamConnectError", "refused")
    child.end()
    server.end()
    assert sink.spans == [child, server]
    resource = otlp.resource({"service.name": "gw"})
    payload = otlp.export_request(resource, "gateway", "1.0", otlp.encode_spans(sink.spans))
    (resource_spans,) = ExportTraceServiceRequest.FromString(payload).resource_spans
    assert resource_spans.resource.attributes[0].value.string_value == "gw"
    (scope_spans,) = resource_spans.scope_spans
    assert (scope_spans.scope.name, scope_spans.scope.version) == ("gateway", "1.0")
    first, second = scope_spans.spans
    assert first.trace_id.hex() == TRACE and first.parent_span_id.hex() == server.span_id
    assert first.status.code == 2 and first.status.message == "refused"
    assert second.parent_span_id.hex() == SPAN and second.kind == 2
    assert second.trace_state == "vendor=x"
    assert second.flags == 0x301  # sampled; the parent is known to be remote
    assert first.flags == 0x101
    values = {kv.key: kv.value for kv in second.attributes}
    assert values["s"].string_value == "v" and values["i"].int_value == 7
    assert values["f"].double_value == 0.5 and values["b"].bool_value is True
    assert second.start_time_unix_nano <= first.start_time_unix_nano
    assert first.end_time_unix_nano <= second.end_time_unix_nano


def test_otlp_spans_decode_as_the_generated_classes_build_them():
    """The exporter writes spans in the wire format itself: it must read back as the
    generated classes would have made them, whatever the attribute values."""
    odd = {"neg": -5, "big": 1 << 70, "utf8": "caf\u00e9 \u2603", "t": True, "f": False, "d": -2.5}
    sink = Sink()
    span = Span(Trace(TRACE, sink), "n\u00e4me", SpanKind.CLIENT, SPAN)
    span.attributes.update(odd)
    span.end()
    expected = OtlpSpan(
        trace_id=bytes.fromhex(TRACE),
        span_id=bytes.fromhex(span.span_id),
        parent_span_id=bytes.fromhex(SPAN),
        flags=0x101,
        name="n\u00e4me",
        kind=3,  # SPAN_KIND_CLIENT
        start_time_unix_nano=span.start_ns,
        end_time_unix_nano=span.end_ns,
        attributes=[
            KeyValue(key="neg", value=AnyValue(int_value=-5)),
            KeyValue(key="big", value=AnyValue(string_value=str(1 << 70))),
            KeyValue(key="utf8", value=AnyValue(string_value="caf\u00e9 \u2603")),
            KeyValue(key="t", value=AnyValue(bool_value=True)),
            KeyValue(key="f", value=AnyValue(bool_value=False)),
            KeyValue(key="d", value=AnyValue(double_value=-2.5)),
        ],
    )
    for _ in range(2):  # the second time from the cache of encoded attributes
        spans = otlp.encode_spans(sink.spans)
        payload = otlp.export_request(otlp.resource({}), "gateway", "1.0", spans)
        (decoded,) = (
            ExportTraceServiceRequest.FromString(payload).resource_spans[0].scope_spans[0].spans
        )
        assert decoded == expected


def test_a_partial_success_counts_what_the_collector_rejected():
    partial = ExportTraceServiceResponse(
        partial_success=ExportTracePartialSuccess(rejected_spans=2)
    ).SerializeToString()
    assert otlp.accepted(partial, 5) == 3
    assert otlp.accepted(b"", 5) == 5
    assert otlp.accepted(b"\xff\xff", 5) == 5
    assert otlp.accepted(b"\x0a\x05\x08\x02\x12\x01x", 5) == 3  # with an error_message


TRACING = """
[tracing]
collector_cluster = "otel"
protocol = "grpc"
sampling = 5
[clusters.otel]
endpoints = ["127.0.0.1:4317"]
protocol = "http2"
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        loads_config(text)
    return raised.value.errors


def test_tracing_config_is_validated():
    config = loads_config(TRACING)
    assert config.tracing is not None and config.tracing.sampling == 5
    assert errors_of(TRACING.replace('"otel"\nprotocol', '"nope"\nprotocol')) == [
        "tracing.collector_cluster: no cluster named 'nope'"
    ]
    assert errors_of(TRACING.replace('protocol = "http2"', "")) == [
        "tracing.collector_cluster: 'otel' must be an http2 cluster for protocol = \"grpc\""
    ]
    assert errors_of(TRACING.replace("sampling = 5", "sampling = 0.5\nmax_cache_size = 0")) == [
        "tracing.max_cache_size: must be from 1 to 1048576, got 0"
    ]
    bad = TRACING.replace("sampling = 5", 'headers = { "a b" = "1" }')
    assert errors_of(bad) == ["tracing: 'headers': 'a b' is not a header name"]
    bad = TRACING.replace("sampling = 5", 'path = "v1/traces"\nmax_export_batch_size = 3000')
    assert errors_of(bad) == [
        "tracing.path: must start with '/', got 'v1/traces'",
        "tracing.max_export_batch_size: more than max_cache_size",
    ]
