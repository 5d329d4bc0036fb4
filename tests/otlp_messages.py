"""The OTLP trace messages for the tests, compiled from tests/protos/otlp_trace.proto with
grpcio-tools' protoc when first imported (see that file for why not opentelemetry-proto's
classes)."""

import importlib
import sys
import tempfile
from pathlib import Path
from types import ModuleType

from grpc_tools import protoc

_PROTOS = Path(__file__).parent / "protos"


def _compile() -> ModuleType:
    out = tempfile.mkdtemp(prefix="otlp-proto-")
    args = ["protoc", f"-I{_PROTOS}", f"--python_out={out}", "otlp_trace.proto"]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed on otlp_trace.proto")
    sys.path.insert(0, out)
    try:
        return importlib.import_module("otlp_trace_pb2")
    finally:
        sys.path.remove(out)


pb2 = _compile()
AnyValue = pb2.AnyValue
KeyValue = pb2.KeyValue
Span = pb2.Span
ExportTraceServiceRequest = pb2.ExportTraceServiceRequest
ExportTraceServiceResponse = pb2.ExportTraceServiceResponse
ExportTracePartialSuccess = pb2.ExportTracePartialSuccess
