"""Tracing: spans of the gateway's own work on each request (OpenTelemetry's model), the
sampling decision, the buffer of ended spans and their OTLP encoding. The exporter that
sends them to a collector cluster is `gateway/clusters/otlp_exporter.py`; the trace
headers on the wire are `gateway/protocol/trace_context.py`."""
