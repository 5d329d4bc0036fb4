"""The tracer: a request's trace as it enters, its SERVER span, and that span's end.

`start_request` runs where the connection manager takes a request head. It reads the trace
context the client sent (`gateway/protocol/trace_context.py`), decides whether to record
spans (`sampler.py`), and passes the trace on with a span id of the gateway's: the SERVER
span's if the request is sampled (and then each upstream attempt names its own CLIENT span
instead, see `gateway/router/attempt_trace.py`), a fresh one if not. A request that is not
sampled still carries the trace on, with the sampled flag off, so the services behind the
gateway neither start a trace of their own nor record one the gateway dropped.

With no `[tracing]` none of this runs: the connection manager keeps its one-line handling
of a client's `traceparent`, and a request costs nothing more.
"""

from gateway.observability.stream_info import StreamInfo
from gateway.observability.tracing import semconv
from gateway.observability.tracing.sampler import Sampler
from gateway.observability.tracing.span import Span, SpanKind, SpanSink, Trace
from gateway.protocol import grpc
from gateway.protocol.headers import RequestHead
from gateway.protocol.trace_context import (
    Propagation,
    TraceContext,
    extract,
    inject,
    new_span_id,
    new_trace_id,
)


class Tracer:
    __slots__ = ("_sampler", "_sink")

    def __init__(self, sampler: Sampler, sink: SpanSink) -> None:
        self._sampler = sampler
        self._sink = sink

    def start_request(self, head: RequestHead, info: StreamInfo) -> None:
        """Joins or starts the request's trace; sets `info.span` if it is sampled, and the
        trace headers the upstream will get."""
        headers = head.headers
        context = extract(headers)
        forced = "x-client-trace-id" in headers
        if context is None:
            context = TraceContext(new_trace_id(), "", None, Propagation.W3C)
        trace_id, propagation = context.trace_id, context.propagation
        sampled = self._sampler.sample(context.sampled, forced)
        info.trace_id = trace_id
        if not sampled:
            inject(headers, trace_id, new_span_id(), False, propagation)
            return
        grpc_call = grpc.is_grpc_request(head)
        trace = Trace(trace_id, self._sink, propagation, context.trace_state)
        span = Span(trace, semconv.span_name(head, grpc_call), SpanKind.SERVER, context.span_id)
        span.attributes.update(semconv.request_attributes(head, grpc_call))
        span.attributes["client.address"] = info.downstream_ip
        if info.user_agent != "-":
            span.attributes["user_agent.original"] = info.user_agent
        span.attributes["gateway.request_id"] = info.request_id
        info.span = span
        inject(headers, trace_id, span.span_id, True, propagation)


def end_request(info: StreamInfo) -> None:
    """The request is over: its SERVER span gets the outcome and ends."""
    span = info.span
    assert span is not None
    attributes = span.attributes
    if info.route_name != "-":
        attributes["gateway.route"] = info.route_name
    if info.cluster_name != "-":
        attributes["gateway.cluster"] = info.cluster_name
    if info.upstream_host != "-":
        attributes["gateway.upstream_host"] = info.upstream_host
    if info.response_flags:
        attributes["gateway.response_flags"] = info.flags_text
    grpc_code = None
    if attributes.get("rpc.system") == "grpc":
        grpc_code = semconv.grpc_status(info.response_head, info.response_trailers)
    semconv.record_response(span, info.response_code, grpc_code)
    if not info.response_code:  # no response at all: cut, or the client left
        span.fail(info.flags_text if info.response_flags else "_OTHER", "no response")
    span.end()
