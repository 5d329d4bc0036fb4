"""wrk: HTTP/1.1 keep-alive load at full speed, with its latency distribution."""

import re
from dataclasses import dataclass

from bench.load.tool import run_tool, to_ms
from bench.measure import Runner


@dataclass
class WrkSample:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int

    def error_note(self) -> str:
        return f"{self.errors} wrk socket errors/non-2xx responses"


_LATENCY_RE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS_RE = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_SOCKET_ERRORS_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(output: str) -> WrkSample:
    latencies = {pct: to_ms(v, unit) for pct, v, unit in _LATENCY_RE.findall(output)}
    rps = _RPS_RE.search(output)
    requests = _REQUESTS_RE.search(output)
    if rps is None or requests is None or set(latencies) != {"50", "99"}:
        raise ValueError(f"could not parse wrk output:\n{output}")
    errors = sum(int(n) for m in _SOCKET_ERRORS_RE.findall(output) for n in m)
    errors += sum(int(n) for n in _NON_2XX_RE.findall(output))
    return WrkSample(float(rps[1]), latencies["50"], latencies["99"], int(requests[1]), errors)


def run_wrk(
    port: int, *, threads: int, connections: int, duration: int, scheme: str = "http"
) -> WrkSample:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        f"{scheme}://127.0.0.1:{port}/",
    ]
    return parse_wrk(run_tool(argv, duration))


def wrk_runner(port: int, *, threads: int, connections: int) -> Runner[WrkSample]:
    def run(seconds: int, warmup: bool) -> WrkSample:
        return run_wrk(port, threads=threads, connections=connections, duration=seconds)

    return run
