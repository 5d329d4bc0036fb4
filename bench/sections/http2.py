"""http2: h2load (h2c, prior knowledge) -> {nginx, gateway, Envoy, HAProxy} -> nginx, in two
setups in one interleaved run: h2c to nginx too (rows -h2up), and HTTP/1.1 to nginx."""

from bench.gates import check_hello_h2
from bench.lineup import HttpPeers
from bench.load.h2load import H2Sample, h2load_runner
from bench.logs import log_offsets
from bench.measure import Result, Target, failing, measure
from bench.names import DIRECT, H2_UP, REFERENCE, TWO_WORKERS
from bench.report import SectionReport, outcome, ratio_to, report_section
from bench.services import PeerUnavailable
from bench.settings import Settings
from bench.table import Row, fmt, render, target_cell


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
            **outcome(r),
        }
        for r in results
    ]


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
            targets.append(Target(name, failing(str(exc)), [service]))
            continue
        print(f"ok   {name:<16} 127.0.0.1:{port}  h2c GET / -> 200 'hello world'")
        runner = h2load_runner(port, clients=settings.h2_clients, streams=settings.h2_streams)
        targets.append(Target(name, runner, [service, peers.nginx]))
    services = [peers.nginx, *peers.h2_proxies, *peers.proxies]
    offsets = log_offsets(services)
    results = measure(targets, settings)
    rows = summarize_http2(results)
    both = [r for r in rows if r["target"] == DIRECT or str(r["target"]).endswith(H2_UP)]
    down = [r for r in rows if r["target"] == DIRECT or not str(r["target"]).endswith(H2_UP)]
    print(f"\nhttp2: h2c (h2load) -> proxy -> h2c nginx\n{render_http2(both)}")
    title = "http2: h2c (h2load) -> proxy -> HTTP/1.1 nginx"
    return report_section(title, results, rows, render_http2(down), services, offsets)
