"""The cost of tracing, two ways.

`--micro` (no sockets, one process): the tracing code a request runs, timed alone. Per
sampled request, what the request's own task runs (the trace started from its headers, the
SERVER span, one attempt's CLIENT span with its pool wait and trace headers, the ends) and
what the exporter task runs later for its three spans (OTLP encoding and serialising, in
batches of 512); per untraced request (no `[tracing]`), what the data path gained for
tracing: a `StreamInfo` with two more fields, and the tests of `info.span`.

Without it: two gateways proxy to the same nginx, identical but for `[tracing]` (sampling
100%, the default; the collector cluster is the same nginx, which answers every export
200), under wrk in interleaved rounds; each one's req/s and CPU time per request.

    python bench/tracing_cost.py [--rounds 3] [--duration 5] [--connections 16]
    python bench/tracing_cost.py --micro [--number 20000]
"""

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path

# Run as a script, Python puts bench/ first on the path; the package needs the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ab import Side, ab_parser, ab_settings, run_pairs, start_side, wrk_target
from bench.peers.gateway import gateway_toml
from bench.peers.nginx import start_nginx
from gateway.clusters.manager import ClusterManager
from gateway.config.load import loads_config
from gateway.observability.stats import StatsStore
from gateway.observability.stream_info import StreamInfo
from gateway.observability.tracing import otlp
from gateway.observability.tracing.sampler import Sampler
from gateway.observability.tracing.span_buffer import SpanBuffer
from gateway.observability.tracing.tracer import Tracer, end_request
from gateway.protocol.headers import HeaderMap, RequestHead
from gateway.router.attempt_trace import AttemptTrace

#: A browser-ish request head, as the HCM has it when the trace starts.
_HEADERS = [
    ("host", "api.example.com"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0"),
    ("accept", "application/json"),
    ("x-forwarded-for", "10.0.0.7"),
    ("x-forwarded-proto", "http"),
    ("x-request-id", "5191cf68-a2d3-4168-9591-147e43576c1f"),
]


def traced_toml(port: int, upstream: int) -> str:
    return (
        gateway_toml(port, upstream)
        + f"""
[clusters.otel]
endpoints = ["127.0.0.1:{upstream}"]

[tracing]
collector_cluster = "otel"
protocol = "http"
"""
    )


def best_us(run: Callable[[], object], number: int) -> float:
    """The fastest of 7 batches of `number` calls, in microseconds of this process's CPU
    time per call (on a shared machine, wall time counts the others' work too)."""
    return min(timeit.repeat(run, number=number, repeat=7, timer=time.process_time)) / number * 1e6


def micro(number: int) -> None:
    store = StatsStore()
    buffer = SpanBuffer(1 << 30, 1 << 30, store.scope("b", "b").counter("dropped"))
    tracer = Tracer(Sampler(100), buffer)
    config = loads_config('[clusters.up]\nendpoints = ["127.0.0.1:8080"]\n')
    cluster = ClusterManager(config, store).get("up")
    host = cluster.hosts[0]

    def stream_info() -> StreamInfo:
        return StreamInfo(stream_id=1, downstream_remote="10.0.0.7:5000", method="GET")

    def traced_request() -> None:
        head = RequestHead("GET", "/api/users/7", "api.example.com", "http", HeaderMap(_HEADERS))
        info = stream_info()
        tracer.start_request(head, info)
        assert info.span is not None
        attempt = AttemptTrace(info.span, head, cluster, host, False, None)
        attempt.wait_for_connection()
        attempt.connected(head.headers)
        info.response_code = 200
        attempt.end(200, None, info)
        end_request(info)

    request_us = best_us(traced_request, number)
    spans = buffer.take(1 << 30)[:512]
    origin = otlp.resource({"service.name": "gateway", "process.pid": 1})

    def export() -> None:
        otlp.export_request(origin, "gateway", "1", otlp.encode_spans(spans))

    export_us = best_us(export, max(number // 500, 10)) / len(spans) * 3
    info_us = best_us(stream_info, number)
    print(f"per sampled request, in its own task: {request_us:.1f} us (3 spans)")
    print(f"per sampled request, in the exporter: {export_us:.1f} us (encoding 3 spans)")
    print(f"StreamInfo(), the per-request record that holds the span: {info_us:.2f} us")


def main() -> None:
    parser = ab_parser(__doc__.splitlines()[0])
    parser.add_argument("--micro", action="store_true", help="time the code alone")
    parser.add_argument("--number", type=int, default=20000, help="--micro: calls per batch")
    args = parser.parse_args()
    if args.micro:
        micro(args.number)
        return
    run_ab(args)


def run_ab(args: argparse.Namespace) -> None:
    settings = ab_settings(args, ["http1"])
    sides: list[Side] = [("tracing off", "off", gateway_toml), ("tracing on", "on", traced_toml)]
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        nginx, _ = start_nginx(stack, tmp)
        off, on = (
            wrk_target(start_side(stack, tmp, s, nginx.port), nginx, settings) for s in sides
        )
        [(off_result, on_result)] = run_pairs([(off, on)], settings)
    print(
        f"wrk -c{settings.connections}, {settings.rounds} interleaved rounds x "
        f"{settings.duration}s, medians; one gateway process each, nginx upstream"
    )
    medians = {}
    for (name, _, _), result in zip(sides, (off_result, on_result), strict=True):
        rps = [s.rps for s in result.samples]
        cpu = [s.cpu_us for s in result.samples]
        medians[name] = (statistics.median(rps), statistics.median(cpu))
        print(
            f"  {name}: {medians[name][0]:8,.0f} req/s, {medians[name][1]:6.1f} us CPU/request"
            "  rounds: " + ", ".join(f"{r:,.0f}/{c:.0f}" for r, c in zip(rps, cpu, strict=True))
        )
    (rps_off, cpu_off), (rps_on, cpu_on) = medians.values()
    print(f"  on/off: req/s {rps_on / rps_off:.3f}, CPU per request {cpu_on - cpu_off:+.1f} us")


if __name__ == "__main__":
    main()
