"""grpc: a grpcio client -> {direct, gateway, Envoy} -> a grpcio echo server, HTTP/2 both
sides: unary calls/s from a few threads, and messages/s of one server-streaming and one
bidi call."""

from collections import Counter

from bench.lineup import GrpcPeers
from bench.load.grpc_client import GrpcSample, grpc_runner
from bench.logs import log_offsets
from bench.measure import Result, Target, measure
from bench.names import DIRECT, REFERENCE
from bench.report import SectionReport, outcome, ratio_to, report_section
from bench.services import Service
from bench.settings import Settings
from bench.table import Row, fmt, render, target_cell

_KINDS = ("unary", "stream", "bidi")


def summarize_grpc(results: list[Result[GrpcSample]]) -> list[Row]:
    vs_direct, vs_envoy = ratio_to(results, DIRECT), ratio_to(results, REFERENCE)
    rows = []
    for r in results:
        row: Row = {"target": r.name}
        for kind in _KINDS:
            row[f"{kind}_rate"] = r.median(f"{kind}_rate")
            row[f"{kind}_vs_direct"] = vs_direct(r, f"{kind}_rate")
            row[f"{kind}_vs_envoy"] = vs_envoy(r, f"{kind}_rate")
        kinds: Counter[str] = Counter()
        for sample in r.samples:
            kinds.update(sample.error_kinds)
        rest = outcome(r)
        row.update(errors=rest.pop("errors"), error_kinds=dict(kinds), **rest)
        rows.append(row)
    return rows


def render_grpc(rows: list[Row]) -> str:
    header = ["target"]
    for label in ("unary/s", "stream msg/s", "bidi msg/s"):
        header += [label, "/direct", "/envoy"]
    body = []
    for row in rows:
        cells = [target_cell(row)]
        for kind in _KINDS:
            cells += [
                fmt(row[f"{kind}_rate"], ",.0f"),
                fmt(row[f"{kind}_vs_direct"], ".2f", "x"),
                fmt(row[f"{kind}_vs_envoy"], ".2f", "x"),
            ]
        body.append([*cells, str(row["errors"])])
    return render([*header, "errors"], body)


def section_grpc(peers: GrpcPeers, settings: Settings) -> SectionReport:
    print(
        f"\n== grpc: {settings.grpc_threads} threads x blocking unary ({settings.grpc_size} B), "
        f"then one server stream and one bidi of {settings.grpc_messages:,} x "
        f"{settings.grpc_size} B"
    )
    services = [peers.server, *peers.proxies]
    offsets = log_offsets(services)

    def target(name: str, port: int, watch: list[Service]) -> Target[GrpcSample]:
        runner = grpc_runner(
            port,
            threads=settings.grpc_threads,
            size=settings.grpc_size,
            messages=settings.grpc_messages,
        )
        return Target(name, runner, watch)

    targets = [target(DIRECT, peers.server.port, [peers.server])]
    for proxy in peers.proxies:
        name = proxy.name.removesuffix("-grpc")
        targets.append(target(name, proxy.port, [proxy, peers.server]))
    results = measure(targets, settings)
    rows = summarize_grpc(results)
    title = "grpc: grpcio client -> proxy -> grpcio server (h2c both sides)"
    return report_section(title, results, rows, render_grpc(rows), services, offsets)
