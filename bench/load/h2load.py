"""h2load: HTTP/2 (h2c, prior knowledge) load at full speed; and HTTP/1.1 load paced at a
fixed rate, each request's time in a per-request log."""

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.load.tool import run_tool, to_ms
from bench.measure import Runner


@dataclass
class H2Sample:
    rps: float
    mean_ms: float  # h2load "time for request" mean
    requests: int  # succeeded
    errors: int  # failed + errored + timeout requests, plus 4xx/5xx responses

    def error_note(self) -> str:
        return f"{self.errors} h2load failed/errored/timed-out requests or 4xx/5xx responses"


_FINISHED_RE = re.compile(r"^finished in [\d.]+\w*, ([\d.]+) req/s", re.MULTILINE)
_REQUESTS_RE = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.MULTILINE,
)
_STATUS_CODES_RE = re.compile(r"^status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", re.M)
# Columns are min, max, mean, sd, +/- sd.
_TIME_RE = re.compile(
    r"^time for request:\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)\s", re.MULTILINE
)
_PROTOCOL_RE = re.compile(r"^Application protocol: (\S+)", re.MULTILINE)


def parse_h2load(output: str) -> H2Sample:
    finished = _FINISHED_RE.search(output)
    requests = _REQUESTS_RE.search(output)
    codes = _STATUS_CODES_RE.search(output)
    mean = _TIME_RE.search(output)
    protocol = _PROTOCOL_RE.search(output)
    if finished is None or requests is None or codes is None or mean is None:
        raise ValueError(f"could not parse h2load output:\n{output}")
    if protocol is None or protocol[1] != "h2c":
        raise ValueError(f"h2load did not speak h2c:\n{output}")
    succeeded = int(requests[4])
    if succeeded == 0:
        raise RuntimeError(f"h2load: no request succeeded:\n{output}")
    errors = sum(int(requests[i]) for i in (5, 6, 7)) + int(codes[1]) + int(codes[2])
    return H2Sample(float(finished[1]), to_ms(mean[1], mean[2]), succeeded, errors)


def run_h2load(port: int, *, clients: int, streams: int, duration: int) -> H2Sample:
    argv = [
        "h2load",
        *("-c", str(clients)),
        *("-m", str(streams)),
        *("-D", str(duration)),
        f"http://127.0.0.1:{port}/",
    ]
    return parse_h2load(run_tool(argv, duration))


def h2load_runner(port: int, *, clients: int, streams: int) -> Runner[H2Sample]:
    def run(seconds: int, warmup: bool) -> H2Sample:
        return run_h2load(port, clients=clients, streams=streams, duration=seconds)

    return run


def run_paced_h1(
    port: int, *, connections: int, per_client: int, duration: int, log: Path
) -> tuple[int, str, list[float]]:
    """`h2load --h1` with `per_client` requests per second on each of `connections`, for
    about `duration` seconds. Returns h2load's exit code, the end of its stderr, and the
    sorted times in ms of the requests answered 200, from its per-request log."""
    # Connections start a few per millisecond (h2load's finest --rate-period), spread
    # over one request interval, so the paced requests arrive evenly instead of in
    # bursts of all connections at once; -r needs -n instead of -D.
    per_ms = math.ceil(connections / max(1, 1000 // per_client))
    log.unlink(missing_ok=True)
    argv = [
        *("h2load", "--h1", "-c", str(connections)),
        *("-r", str(per_ms), "--rate-period", "1ms"),
        *("--rps", str(per_client), "-n", str(per_client * connections * duration)),
        *("--log-file", str(log), f"http://127.0.0.1:{port}/"),
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        return out.returncode, out.stderr.strip()[-300:], []
    times = []
    for line in log.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] == "200":
            times.append(int(fields[2]) / 1000)  # microseconds -> ms
    return 0, "", sorted(times)
