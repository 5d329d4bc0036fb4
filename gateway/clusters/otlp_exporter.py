"""The OTLP exporter: ended spans from the tracer's buffer to the collector cluster.

One task, `trace exporter`, in the root nursery (so in /tasks). It sleeps until enough
spans wait (`min_flush_spans`) or the flush timer fires (`flush_interval`), then sends
them in batches of at most `max_export_batch_size`, one request at a time, with the
gateway's own client over the collector cluster's pool: OTLP/HTTP (a protobuf body POSTed
to `/v1/traces`) or OTLP/gRPC (TraceService/Export, framed by hand as ADS frames its
messages, so no blocking grpcio and no SDK thread runs in the Trio loop). The collector
cluster is an ordinary cluster: its timeouts, health checks, TLS and stats apply.

Requests never wait for any of this: they only append to the bounded buffer
(`gateway/observability/tracing/span_buffer.py`). An export that fails (connect failure,
an error status, `timeout`) is counted and its spans dropped, not retried: while the
collector is down the buffer fills and later spans are dropped on arrival, counted in
`tracing.opentelemetry.spans_dropped`. The first failure is logged, and the recovery.
"""

import logging
import os
import socket
import uuid
from collections.abc import Mapping
from typing import Any

import trio

from gateway.clusters.http_client import ServiceResponse, call_service
from gateway.clusters.manager import ClusterManager
from gateway.config.model import Tracing
from gateway.errors import GatewayError
from gateway.observability.stats import Counter, StatsStore
from gateway.observability.tasktree import annotate
from gateway.observability.tracing import otlp
from gateway.observability.tracing.semconv import grpc_status
from gateway.observability.tracing.span import AttributeValue, Span
from gateway.observability.tracing.span_buffer import SpanBuffer
from gateway.protocol import grpc
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead
from gateway.version import gateway_version

log = logging.getLogger("gateway.tracing")

_GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
#: The most of a collector's answer kept: a partial-success message, or an error's text.
_MAX_ANSWER = 64 * 1024
#: The instrumentation scope every span is reported under.
_SCOPE = "gateway"
#: Spans encoded between two checkpoints (about half a millisecond's work).
_ENCODE_SLICE = 50


class ExportFailed(Exception):
    """The collector answered, but not with success."""


class TracingStats:
    """`tracing.opentelemetry.*`, Envoy's names: spans_sent, spans_dropped, timer_flushed,
    and per export request `http_reports_*` (OTLP/HTTP) or `grpc_reports_*` (OTLP/gRPC)."""

    __slots__ = (
        "reports_failed",
        "reports_sent",
        "reports_success",
        "spans_dropped",
        "spans_sent",
        "timer_flushed",
    )

    def __init__(self, store: StatsStore, protocol: str) -> None:
        scope = store.scope("tracing.opentelemetry", "tracing_opentelemetry")
        self.spans_sent: Counter = scope.counter("spans_sent")
        self.spans_dropped: Counter = scope.counter("spans_dropped")
        self.timer_flushed: Counter = scope.counter("timer_flushed")
        self.reports_sent: Counter = scope.counter(f"{protocol}_reports_sent")
        self.reports_success: Counter = scope.counter(f"{protocol}_reports_success")
        self.reports_failed: Counter = scope.counter(f"{protocol}_reports_failed")


def resource_attributes(service_name: str, worker: int | None) -> dict[str, AttributeValue]:
    """Who sends the spans: the service, this process (a fresh instance id per start), and
    which worker it is when `[server] workers` runs several."""
    attributes: dict[str, AttributeValue] = {
        "service.name": service_name,
        "service.version": gateway_version(),
        "service.instance.id": str(uuid.uuid4()),
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
    }
    if worker is not None:
        attributes["gateway.worker"] = worker
    return attributes


class OtlpExporter:
    def __init__(
        self,
        config: Tracing,
        clusters: ClusterManager,
        store: StatsStore,
        worker: int | None = None,
    ) -> None:
        self._config = config
        self._clusters = clusters
        self.stats = TracingStats(store, config.protocol)
        #: Where the tracer's spans go when they end.
        self.buffer = SpanBuffer(
            config.max_cache_size, config.min_flush_spans, self.stats.spans_dropped
        )
        self._resource = otlp.resource(resource_attributes(config.service_name, worker))
        self._version = gateway_version()
        self._exporting = False
        self._failing = False

    async def run(self) -> None:
        """Exports until cancelled."""
        annotate(
            "trace exporter",
            live=self._task_fields,
            cluster=self._config.collector_cluster,
            protocol=self._config.protocol,
        )
        while True:
            with trio.move_on_after(self._config.flush_interval) as timer:
                await self.buffer.wait()
            if timer.cancelled_caught:
                self.stats.timer_flushed.inc()
            await self.flush()

    def _task_fields(self) -> dict[str, Any]:
        return {
            "state": "exporting" if self._exporting else "waiting for spans",
            "buffered_spans": len(self.buffer),
            "spans_sent": self.stats.spans_sent.value,
            "spans_dropped": self.stats.spans_dropped.value,
        }

    async def flush(self) -> None:
        """Exports every span waiting now (and those that end meanwhile)."""
        while len(self.buffer):
            await self._export(self.buffer.take(self._config.max_export_batch_size))

    async def _export(self, spans: list[Span]) -> None:
        encoded = []
        for start in range(0, len(spans), _ENCODE_SLICE):
            # Requests run between slices: a whole batch at once would stall them.
            await trio.lowlevel.checkpoint()
            encoded.append(otlp.encode_spans(spans[start : start + _ENCODE_SLICE]))
        payload = otlp.export_request(self._resource, _SCOPE, self._version, b"".join(encoded))
        self.stats.reports_sent.inc()
        self._exporting = True
        try:
            with trio.fail_after(self._config.timeout):
                answer = await self._send(payload)
        except (GatewayError, ExportFailed, trio.TooSlowError, ValueError) as exc:
            self.stats.reports_failed.inc()
            self.buffer.drop(len(spans))
            if not self._failing:
                self._failing = True
                log.warning(
                    "trace export to cluster %s failed (%s); spans are dropped until it works",
                    self._config.collector_cluster,
                    str(exc) or type(exc).__name__,
                )
            return
        finally:
            self._exporting = False
        if self._failing:
            self._failing = False
            log.warning("trace export to cluster %s works again", self._config.collector_cluster)
        taken = otlp.accepted(answer, len(spans))
        self.stats.reports_success.inc()
        self.stats.spans_sent.inc(taken)
        if taken < len(spans):
            self.buffer.drop(len(spans) - taken)

    async def _send(self, payload: bytes) -> bytes:
        """One export; the collector's ExportTraceServiceResponse (bytes) on success."""
        config = self._config
        cluster = self._clusters.get(config.collector_cluster)
        if config.protocol == "grpc":
            head = grpc.call_head(_GRPC_EXPORT, config.collector_cluster)
            _add(head.headers, config.headers)
            response = await call_service(
                cluster, head, max_body=_MAX_ANSWER, body=grpc.frame(payload)
            )
            return _grpc_answer(response)
        scheme = "https" if cluster.config.tls is not None else "http"
        headers = HeaderMap([("content-type", "application/x-protobuf")])
        _add(headers, config.headers)
        head = RequestHead("POST", config.path, config.collector_cluster, scheme, headers)
        response = await call_service(cluster, head, max_body=_MAX_ANSWER, body=payload)
        if not 200 <= response.status < 300:
            raise ExportFailed(f"HTTP {response.status}")
        return response.body


def _add(headers: HeaderMap, extra: Mapping[str, str]) -> None:
    for name, value in extra.items():
        headers.set(name, value)


def _grpc_answer(response: ServiceResponse) -> bytes:
    # In the trailers, or in the head of a trailers-only answer.
    status = grpc_status(ResponseHead(response.status, response.headers), response.trailers)
    if response.status != 200 or status != 0:
        raise ExportFailed(f"HTTP {response.status}, grpc-status {status}")
    messages, _ = grpc.split_messages(response.body, _MAX_ANSWER)
    return messages[0] if messages else b""
