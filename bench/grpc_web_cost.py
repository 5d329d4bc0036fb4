"""The cost of gRPC-Web: the same unary call as gRPC, gRPC-Web and gRPC-Web text.

First the filter alone, in this process: its hooks for one unary call (request head and
body, response head, body and trailers), binary and text, timed over many calls (the
best of a few runs, so other work on the machine hardly moves it). Then end to end: one
gateway, with `grpc_web` in its chain, in front of the grpcio echo server, and h2load (h2c)
making the same unary call (a 64-byte message) in three forms that differ only in what the
filter does: plain gRPC (the filter passes it by), gRPC-Web (content type and the trailer
frame) and gRPC-Web text (base64 both ways too). Interleaved rounds; the gateway's CPU time
per call is what each form costs, the upstream's share being the same for all three.

    python bench/grpc_web_cost.py [--rounds 3] [--duration 5] [--h2-clients 10] [--h2-streams 10]
"""

import base64
import contextlib
import http.client
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

import trio

# Run as a script, Python puts bench/ first on the path; the package needs the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ab import CpuSample, ab_parser, ab_settings, cpu_costed
from bench.grpc_peer import UNARY
from bench.load.grpc_client import check_grpc
from bench.load.h2load import H2Sample, parse_h2load
from bench.load.tool import run_tool
from bench.measure import Runner, Target, measure
from bench.peers.gateway import gateway_grpc_toml, start_configured
from bench.peers.grpc_echo import start_grpc_echo
from bench.services import PeerUnavailable, Service
from gateway.http.filters.grpc_web import GrpcWebFilter, GrpcWebStats
from gateway.observability.stats import StatsStore, create_stats
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead

MESSAGE = struct.pack(">BI", 0, 64) + b"x" * 64
#: Each form: request headers and body. (h2load counts HTTP statuses only: the gate checks
#: that every form's call really succeeds.)
FORMS: dict[str, tuple[dict[str, str], bytes]] = {
    "grpc": ({"content-type": "application/grpc", "te": "trailers"}, MESSAGE),
    "grpc-web": ({"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}, MESSAGE),
    "grpc-web-text": (
        {"content-type": "application/grpc-web-text", "x-grpc-web": "1"},
        base64.b64encode(MESSAGE),
    ),
}


def grpc_web_toml(port: int, upstream_port: int) -> str:
    """The gRPC section's gateway with `grpc_web` in its chain, and its route by prefix
    (`grpc = true` would not match gRPC-Web: routes are matched before the filter runs)."""
    config = gateway_grpc_toml(port, upstream_port)
    for old, new in (
        ('virtual_hosts = ["grpc"]\n', 'virtual_hosts = ["grpc"]\nhttp_filters = ["web"]\n'),
        ('match = { prefix = "/", grpc = true }', 'match = { prefix = "/" }'),
    ):
        assert old in config, old
        config = config.replace(old, new)
    return config + '\n[http_filters.web]\ntype = "grpc_web"\n'


def check_forms(service: Service) -> None:
    """Gate: one call of each gRPC-Web form must end with grpc-status 0 in its trailer frame."""
    for name, (headers, body) in FORMS.items():
        if name == "grpc":
            continue  # check_grpc's, at start
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        conn.request("POST", UNARY, body=body, headers=headers)
        answer = conn.getresponse().read()
        conn.close()
        if name.endswith("-text"):
            answer = base64.b64decode(answer)
        if not answer.startswith(MESSAGE) or b"grpc-status:0\r\n" not in answer:
            raise PeerUnavailable(f"{service.name}: {name} call failed: {answer[:200]!r}")


def h2load_form(port: int, form: str, tmp: Path, clients: int, streams: int) -> Runner[H2Sample]:
    """h2load making the unary call in `form` at full speed."""
    headers, body = FORMS[form]
    body_file = tmp / f"{form}.bin"
    body_file.write_bytes(body)

    def run(seconds: int, warmup: bool) -> H2Sample:
        argv = [
            *("h2load", "-c", str(clients), "-m", str(streams), "-D", str(seconds)),
            *("-d", str(body_file)),
            *(arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")),
            f"http://127.0.0.1:{port}{UNARY}",
        ]
        return parse_h2load(run_tool(argv, seconds))

    return run


async def _hooks(text: bool, calls: int, filtered: bool = True) -> float:
    """Microseconds per unary call of the filter's hooks, plus making their arguments;
    with `filtered` false, of making the arguments alone (the baseline to subtract)."""
    stats = create_stats(GrpcWebStats, StatsStore().scope("bench", "bench"))
    headers, body = FORMS["grpc-web-text" if text else "grpc-web"]
    started = time.perf_counter()
    for _ in range(calls):
        web = GrpcWebFilter(stats)
        request = RequestHead("POST", UNARY, "x", "http", HeaderMap(headers.items()))
        response = ResponseHead(200, HeaderMap([("content-type", "application/grpc")]))
        trailers = HeaderMap([("grpc-status", "0"), ("grpc-message", "")])
        if filtered:
            await web.decode_headers(request, False)
            await web.decode_data(body, True)
            await web.encode_headers(response, False)
            await web.encode_data(MESSAGE, False)
            await web.encode_trailers(trailers)
    return (time.perf_counter() - started) / calls * 1e6


def hooks_cost(text: bool, calls: int = 20000, runs: int = 5) -> float:
    """The hooks' own microseconds per call: the best of `runs`, less the baseline's best."""
    best = min(trio.run(_hooks, text, calls) for _ in range(runs))
    return best - min(trio.run(_hooks, text, calls, False) for _ in range(runs))


def main() -> None:
    settings = ab_settings(ab_parser(__doc__.splitlines()[0], h2load=True).parse_args(), [])
    print("the filter's hooks for one unary call, in this process (best of 5 x 20,000 calls):")
    for text in (False, True):
        print(f"  {'text' if text else 'binary':7} {hooks_cost(text):5.1f} us")
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        server = start_grpc_echo(stack, tmp)

        def gate(service: Service) -> None:
            check_grpc(service)
            check_forms(service)

        gateway = start_configured(
            stack, tmp, "gateway-grpc-web", lambda port: grpc_web_toml(port, server.port), gate=gate
        )
        targets: list[Target[CpuSample]] = []
        for form in FORMS:
            run = h2load_form(gateway.port, form, tmp, settings.h2_clients, settings.h2_streams)
            targets.append(Target(form, cpu_costed(gateway, server, run).run, [gateway, server]))
        results = measure(targets, settings)
    if failed := [r.name for r in results if r.failure is not None]:
        sys.exit(f"failed: {', '.join(failed)}")
    print(
        f"h2load -c{settings.h2_clients} -m{settings.h2_streams}, {settings.rounds} interleaved "
        f"rounds x {settings.duration}s, medians; one gateway process, grpcio upstream"
    )
    base = statistics.median(s.cpu_us for s in results[0].samples)
    for r in results:
        rps = statistics.median(s.rps for s in r.samples)
        cpu = statistics.median(s.cpu_us for s in r.samples)
        extra = "" if r is results[0] else f"  ({cpu - base:+.1f} us vs grpc)"
        print(f"  {r.name:14} {rps:8,.0f} calls/s  {cpu:6.1f} us gateway CPU per call{extra}")


if __name__ == "__main__":
    main()
