"""http3: h3load (HTTP/3 over QUIC, closed loop) -> {gateway, Envoy} -> nginx over HTTP/1.1.
nginx-light has no QUIC, so there is no direct row."""

from bench.lineup import H3Peers
from bench.load.h3_client import H3Sample, h3load_runner
from bench.logs import log_offsets
from bench.measure import Result, Target, failing, measure
from bench.names import REFERENCE
from bench.report import SectionReport, outcome, ratio_to, report_section
from bench.settings import Settings
from bench.table import Row, fmt, render, target_cell


def summarize_http3(results: list[Result[H3Sample]]) -> list[Row]:
    vs_envoy = ratio_to(results, REFERENCE)
    return [
        {
            "target": r.name,
            "rps": r.median("rps"),
            "p50_ms": r.median("p50_ms"),
            "p99_ms": r.median("p99_ms"),
            "rps_vs_envoy": vs_envoy(r, "rps"),
            "p50_vs_envoy": vs_envoy(r, "p50_ms"),
            "proxy_us": r.median("proxy_us"),
            "client_cores": r.median("client_cores"),
            **outcome(r),
        }
        for r in results
    ]


def render_http3(rows: list[Row]) -> str:
    header = ["target", "req/s", "p50 ms", "p99 ms", "rps/envoy", "p50/envoy"]
    header += ["proxy CPU us/req", "client cores", "errors"]
    body = [
        [
            target_cell(row),
            fmt(row["rps"], ",.0f"),
            fmt(row["p50_ms"], ".2f"),
            fmt(row["p99_ms"], ".2f"),
            fmt(row["rps_vs_envoy"], ".2f", "x"),
            fmt(row["p50_vs_envoy"], ".2f", "x"),
            fmt(row["proxy_us"], ",.0f"),
            fmt(row["client_cores"], ".2f"),
            str(row["errors"]),
        ]
        for row in rows
    ]
    return render(header, body)


def section_http3(peers: H3Peers, settings: Settings) -> SectionReport:
    print(
        f"\n== http3: h3load {settings.h3_processes} process(es) x {settings.h3_connections} "
        f"QUIC connections x {settings.h3_streams} streams, closed loop; proxies talk "
        "HTTP/1.1 to nginx"
    )
    targets: list[Target[H3Sample]] = []
    if peers.gateway_failure is not None:
        targets.append(Target("gateway", failing(peers.gateway_failure), [peers.nginx]))
    for proxy in peers.proxies:
        runner = h3load_runner(
            proxy,
            processes=settings.h3_processes,
            connections=settings.h3_connections,
            streams=settings.h3_streams,
        )
        targets.append(Target(proxy.name.removesuffix("-h3"), runner, [proxy, peers.nginx]))
    if not targets:
        print("http3: nothing to measure (no proxy answers HTTP/3; see the SKIP lines)")
        return SectionReport([], {}, False)
    services = [peers.nginx, *peers.proxies]
    offsets = log_offsets(services)
    results = measure(targets, settings)
    rows = summarize_http3(results)
    title = "http3: HTTP/3 (h3load) -> proxy -> HTTP/1.1 nginx"
    return report_section(title, results, rows, render_http3(rows), services, offsets)
