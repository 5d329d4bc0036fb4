"""h3load.py (HTTP/3, closed loop) in a fresh process, as a section's runner, and the HTTP/3
gate."""

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.measure import Runner
from bench.procfs import cpu_seconds
from bench.services import Service

H3LOAD = Path(__file__).resolve().parent / "h3load.py"


@dataclass
class H3Sample:
    rps: float  # requests answered 200 "hello world" per second
    p50_ms: float | None
    p99_ms: float | None
    client_cores: float  # the client's CPU time over the run's wall time
    proxy_us: float  # the proxy's CPU time per answered request
    requests: int
    errors: int  # other answers, resets, requests lost with their connection
    first_error: str

    def error_note(self) -> str:
        return f"{self.errors} failed HTTP/3 requests, the first: {self.first_error}"


def h3load(command: str, port: int, args: list[str], timeout: float) -> dict[str, object]:
    """Runs h3load.py COMMAND in its own process(es); returns its report."""
    argv = [sys.executable, str(H3LOAD), command, "--port", str(port), *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"h3load {command} failed ({out.returncode}):\n{out.stderr}")
    report = json.loads(lines[-1])
    if not isinstance(report, dict):
        raise ValueError(f"h3load {command} printed {lines[-1]!r}")
    return report


def check_hello_h3(service: Service) -> str | None:
    """HTTP/3 gate (a start_probed probe): one GET over QUIC must return 200 and nginx's body.
    None if it did, else what happened."""
    try:
        report = h3load("check", service.port, ["--timeout", "2"], timeout=30)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        return f"h3load check failed: {exc}"
    return None if report["ok"] else f"HTTP/3 GET / failed: {report['error']}"


def _number(report: dict[str, object], key: str) -> float:
    value = report[key]
    if not isinstance(value, int | float):
        raise ValueError(f"h3load: {key} is {value!r}")
    return float(value)


def _optional(report: dict[str, object], key: str) -> float | None:
    return None if report[key] is None else _number(report, key)


def h3load_runner(
    service: Service, *, processes: int, connections: int, streams: int
) -> Runner[H3Sample]:
    """h3load against the proxy `service`, whose CPU time per request is measured too."""
    args = [
        *("--processes", str(processes)),
        *("--connections", str(connections)),
        *("--streams", str(streams)),
    ]

    def run(seconds: int, warmup: bool) -> H3Sample:
        before = cpu_seconds(service.proc.pid)
        report = h3load("run", service.port, [*args, "--duration", str(seconds)], seconds + 60)
        used = cpu_seconds(service.proc.pid) - before
        requests = int(_number(report, "requests"))
        if requests == 0:
            raise RuntimeError(f"h3load: no request succeeded: {report['first_error']}")
        return H3Sample(
            rps=_number(report, "rps"),
            p50_ms=_optional(report, "p50_ms"),
            p99_ms=_optional(report, "p99_ms"),
            client_cores=_number(report, "cpu_s") / _number(report, "seconds"),
            proxy_us=used / requests * 1e6,
            requests=requests,
            errors=int(_number(report, "errors")),
            first_error=str(report["first_error"]),
        )

    return run
