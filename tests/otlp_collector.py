"""Real OTLP receivers for the tracing tests: OpenTelemetry's TraceService over gRPC
(grpcio serving its Export method, messages from tests/otlp_messages.py) and OTLP/HTTP (hypercorn on
Trio, POST /v1/traces with a protobuf body). Both keep every span they are sent, decoded
into plain records the tests can compare."""

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import attrs
import grpc
import trio

from gateway.admin.asgi import Receive, Scope, Send, complete_lifespan
from tests.helpers import serve_asgi
from tests.otlp_messages import (
    AnyValue,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
    KeyValue,
)

_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

#: OTLP's span kinds, by number.
KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT"}


def _value(value: AnyValue) -> Any:
    return getattr(value, value.WhichOneof("value") or "string_value")


def _attributes(items: Iterator[KeyValue]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


@attrs.frozen
class ReceivedSpan:
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    start: int
    end: int
    attributes: dict[str, Any]
    #: "ERROR", or "" (unset)
    status: str
    trace_state: str
    resource: dict[str, Any]

    def within(self, parent: "ReceivedSpan") -> bool:
        return parent.start <= self.start <= self.end <= parent.end


@attrs.define
class Received:
    """Everything a collector was sent, whatever the protocol."""

    requests: list[ExportTraceServiceRequest] = attrs.Factory(list)
    #: HTTP only: the content-type of each export.
    content_types: list[str] = attrs.Factory(list)
    _lock: threading.Lock = attrs.Factory(threading.Lock)

    def add(self, request: ExportTraceServiceRequest) -> None:
        with self._lock:
            self.requests.append(request)

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            requests = list(self.requests)
        spans = []
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        spans.append(
                            ReceivedSpan(
                                name=s.name,
                                kind=KINDS.get(s.kind, str(s.kind)),
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent_id=s.parent_span_id.hex(),
                                start=s.start_time_unix_nano,
                                end=s.end_time_unix_nano,
                                attributes=_attributes(s.attributes),
                                status="ERROR" if s.status.code == 2 else "",
                                trace_state=s.trace_state,
                                resource=resource,
                            )
                        )
        return spans

    def named(self, name: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.name == name]


def _trace_service(received: Received) -> grpc.GenericRpcHandler:
    def export(request: Any, context: grpc.ServicerContext) -> Any:
        received.add(request)
        return ExportTraceServiceResponse()

    handler = grpc.unary_unary_rpc_method_handler(
        export,
        request_deserializer=ExportTraceServiceRequest.FromString,
        response_serializer=ExportTraceServiceResponse.SerializeToString,
    )
    service, _, method = _EXPORT[1:].rpartition("/")
    return grpc.method_handlers_generic_handler(service, {method: handler})


def start_grpc_collector() -> tuple[grpc.Server, int, Received]:
    """The OTLP gRPC TraceService on 127.0.0.1, a free port."""
    received = Received()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((_trace_service(received),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, received


@attrs.define(eq=False)
class HttpCollector:
    """OTLP/HTTP: POST /v1/traces, application/x-protobuf. `status` other than 200 answers
    every export with that status; `delay` holds every answer that long."""

    received: Received = attrs.Factory(Received)
    port: int = 0
    status: int = 200
    delay: float = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if self.delay:
            await trio.sleep(self.delay)
        if scope["method"] == "POST" and scope["path"] == "/v1/traces":
            self.received.content_types.append(headers.get("content-type", ""))
            self.received.add(ExportTraceServiceRequest.FromString(body))
        answer = ExportTraceServiceResponse().SerializeToString()
        start = {
            "type": "http.response.start",
            "status": self.status,
            "headers": [(b"content-type", b"application/x-protobuf")],
        }
        await send(start)
        await send({"type": "http.response.body", "body": answer})


async def start_http_collector(nursery: trio.Nursery, **keys: Any) -> HttpCollector:
    collector = HttpCollector(**keys)
    collector.port = await serve_asgi(nursery, collector)
    return collector
