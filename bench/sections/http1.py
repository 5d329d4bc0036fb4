"""http1: wrk -> {nginx, gateway (1 and 2 workers), Envoy (concurrency 1 and 2), HAProxy,
mitmproxy} -> nginx, HTTP/1.1 both sides; then the gateway's latency at half its max rate
and its RSS per idle connection."""

import os

from bench.lineup import HttpPeers
from bench.load.wrk import WrkSample, wrk_runner
from bench.logs import log_offsets
from bench.measure import Result, Target, measure
from bench.names import REFERENCE, TWO_WORKERS
from bench.report import SectionReport, outcome, ratio_to, report_section
from bench.sections.idle_memory import idle_connection_rss
from bench.sections.paced_latency import paced_latency
from bench.settings import Settings
from bench.table import Row, fmt, render, target_cell


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
            **outcome(r),
        }
        for r in results
    ]


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


def section_http1(peers: HttpPeers, settings: Settings) -> SectionReport:
    print(f"\n== http1: wrk -t{settings.threads} -c{settings.connections} --latency")
    services = [peers.nginx, *peers.proxies]
    offsets = log_offsets(services)
    targets = [
        Target(
            s.name,
            wrk_runner(s.port, threads=settings.threads, connections=settings.connections),
            [s, peers.nginx],
        )
        for s in services
    ]
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
