"""The grpcio client of grpc_peer.py, each call in a fresh process (so client, server and
proxy never share a GIL): blocking unary calls from a few threads, one server stream, one
bidi call; and the gRPC gate."""

import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.measure import Runner
from bench.services import PeerUnavailable, Service

GRPC_PEER = Path(__file__).resolve().parents[1] / "grpc_peer.py"


@dataclass
class GrpcSample:
    unary_rate: float  # successful unary calls/s
    stream_rate: float  # server-streaming messages/s
    bidi_rate: float  # bidi messages/s (sent and echoed)
    errors: int
    error_kinds: dict[str, int]  # "kind: grpc status: details" -> count

    def error_note(self) -> str:
        kinds = "; ".join(f"{kind} x{n}" for kind, n in self.error_kinds.items())
        return f"{self.errors} gRPC errors: {kinds}"


def grpc_client(command: str, port: int, args: list[str], timeout: float) -> dict[str, object]:
    """Runs bench/grpc_peer.py COMMAND in its own process (its own GIL); returns its report."""
    argv = [sys.executable, str(GRPC_PEER), command, "--target", f"127.0.0.1:{port}", *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"grpc client {command} failed ({out.returncode}):\n{out.stderr}")
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise ValueError(f"grpc client {command} printed nothing:\n{out.stderr}")
    report = json.loads(lines[-1])
    if not isinstance(report, dict):
        raise ValueError(f"grpc client {command} printed {lines[-1]!r}")
    return report


def check_grpc(service: Service) -> None:
    """gRPC gate: one small unary, server-streaming and bidi echo each."""
    try:
        report = grpc_client("check", service.port, [], timeout=30)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{service.name}: gRPC check failed: {exc}") from exc
    if report["errors"]:
        raise PeerUnavailable(f"{service.name}: gRPC check failed: {report['error_kinds']}")


def run_grpc(
    port: int, *, threads: int, size: int, messages: int, duration: int, warmup: bool
) -> GrpcSample:
    """Unary for `duration` seconds, then (not in warm-up) one server stream and one bidi."""
    size_args = ["--size", str(size)]
    unary_args = ["--duration", str(duration), "--threads", str(threads), *size_args]
    reports = {"unary": grpc_client("unary", port, unary_args, timeout=duration + 120)}
    if not warmup:
        stream_args = ["--messages", str(messages), *size_args]
        for kind in ("stream", "bidi"):
            reports[kind] = grpc_client(kind, port, stream_args, timeout=300)
    kinds: Counter[str] = Counter()
    for kind, report in reports.items():
        error_kinds = report["error_kinds"]
        assert isinstance(error_kinds, dict)
        kinds.update({f"{kind}: {k}": int(n) for k, n in error_kinds.items()})

    def rate(kind: str) -> float:
        value = reports[kind]["rate"] if kind in reports else 0.0
        assert isinstance(value, int | float)
        return float(value)

    return GrpcSample(rate("unary"), rate("stream"), rate("bidi"), sum(kinds.values()), dict(kinds))


def grpc_runner(port: int, *, threads: int, size: int, messages: int) -> Runner[GrpcSample]:
    def run(seconds: int, warmup: bool) -> GrpcSample:
        return run_grpc(
            port, threads=threads, size=size, messages=messages, duration=seconds, warmup=warmup
        )

    return run
