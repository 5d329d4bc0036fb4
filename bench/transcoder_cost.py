"""The cost of JSON transcoding per request, next to plain gRPC.

One gateway runs a grpc_json_transcoder in front of a grpcio server; h2load (h2c) makes
the same unary call two ways, in interleaved rounds: as gRPC (POST /bench.Shelves/GetShelf,
which passes the filter untouched) and as REST (GET /v1/shelves/1, which the filter turns
into that call and its answer into JSON). The gateway's CPU time per request for each, and
the difference, are what transcoding costs.

    python bench/transcoder_cost.py [--rounds 3] [--duration 5] [--clients 4] [--streams 4]
"""

import argparse
import contextlib
import statistics
import struct
import sys
import tempfile
import urllib.request
from concurrent import futures
from pathlib import Path

# Run as a script, Python puts bench/ first on the path; the package needs the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import google.api
import grpc
from grpc_tools import protoc  # type: ignore[import-untyped]

from bench.load.h2load import parse_h2load
from bench.load.tool import run_tool
from bench.peers.gateway import gateway_argv
from bench.procfs import cpu_seconds
from bench.services import Service, free_port, start_checked

PROTO = """
syntax = "proto3";
package bench;
import "google/api/annotations.proto";
service Shelves {
  rpc GetShelf(GetShelfRequest) returns (Shelf) {
    option (google.api.http) = { get: "/v1/shelves/{shelf}" };
  }
}
message GetShelfRequest { int64 shelf = 1; }
message Shelf { int64 id = 1; string theme = 2; repeated string tags = 3; }
"""
#: GetShelfRequest{shelf: 1}, and the answer: Shelf{id: 1, theme: "Fiction", tags: [a, b]}.
REQUEST = b"\x08\x01"
ANSWER = b"\x08\x01\x12\x07Fiction\x1a\x01a\x1a\x01b"


def descriptor_set(tmp: Path) -> Path:
    (tmp / "bench.proto").write_text(PROTO)
    annotations = next(
        Path(p) for p in google.api.__path__ if (Path(p) / "annotations.proto").exists()
    )
    out = tmp / "bench.pb"
    well_known = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    args = ["protoc", f"-I{tmp}", f"-I{annotations.parents[1]}", f"-I{well_known}"]
    if protoc.main([*args, "--include_imports", f"--descriptor_set_out={out}", "bench.proto"]):
        raise RuntimeError("protoc failed")
    return out


def start_grpc_server() -> tuple[grpc.Server, int]:
    handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
        lambda request, context: ANSWER
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Shelves", {"GetShelf": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def gateway_toml(port: int, upstream: int, descriptor: Path) -> str:
    return f"""\
[server]
workers = 1

[listeners.edge]
address = "127.0.0.1:{port}"
virtual_hosts = ["all"]
http_filters = ["rest"]

[http_filters.rest]
type = "grpc_json_transcoder"
proto_descriptor = "{descriptor}"
services = ["bench.Shelves"]

[virtual_hosts.all]
domains = ["*"]

[[virtual_hosts.all.routes]]
match = {{ prefix = "/", grpc = true }}
cluster = "grpc"
timeout = "0s"

[clusters.grpc]
endpoints = ["127.0.0.1:{upstream}"]
protocol = "http2"
"""


def check_rest(service: Service) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/v1/shelves/1") as answer:
        body = answer.read()
    if body != b'{"id":"1","theme":"Fiction","tags":["a","b"]}':
        raise RuntimeError(f"unexpected REST answer: {body!r}")


def h2load_argv(port: int, kind: str, message: Path, args: argparse.Namespace) -> list[str]:
    load = ["h2load", "-c", str(args.clients), "-m", str(args.streams), "-D", str(args.duration)]
    if kind == "rest":
        return [*load, f"http://127.0.0.1:{port}/v1/shelves/1"]
    grpc_headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    return [
        *load,
        *grpc_headers,
        "-d",
        str(message),
        f"http://127.0.0.1:{port}/bench.Shelves/GetShelf",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--streams", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name, contextlib.ExitStack() as stack:
        tmp = Path(name)
        server, upstream = start_grpc_server()
        stack.callback(server.stop, None)
        message = tmp / "request.bin"
        message.write_bytes(struct.pack(">BI", 0, len(REQUEST)) + REQUEST)
        port = free_port()
        conf = tmp / "gateway.toml"
        conf.write_text(gateway_toml(port, upstream, descriptor_set(tmp)))
        gateway = start_checked(stack, tmp, "gateway", gateway_argv(conf), port, check_rest)
        rps: dict[str, list[float]] = {"grpc": [], "rest": []}
        cpu_us: dict[str, list[float]] = {"grpc": [], "rest": []}
        for round_ in range(args.rounds + 1):  # round 0 warms up both
            for kind in ("grpc", "rest") if round_ % 2 else ("rest", "grpc"):
                before = cpu_seconds(gateway.proc.pid)
                sample = parse_h2load(
                    run_tool(h2load_argv(port, kind, message, args), args.duration)
                )
                used = cpu_seconds(gateway.proc.pid) - before
                if sample.errors:
                    raise RuntimeError(f"{kind}: {sample.error_note()}")
                if round_:
                    rps[kind].append(sample.rps)
                    cpu_us[kind].append(used / sample.requests * 1e6)
    grpc_cpu, rest_cpu = statistics.median(cpu_us["grpc"]), statistics.median(cpu_us["rest"])
    print(
        f"h2load -c{args.clients} -m{args.streams}, {args.rounds} interleaved rounds x "
        f"{args.duration}s, medians; one gateway process, grpcio upstream"
    )
    for kind, label in (("grpc", "gRPC (passes the filter)"), ("rest", "REST (transcoded)")):
        print(
            f"  {label:26} {statistics.median(rps[kind]):7,.0f} req/s  "
            f"gateway CPU {statistics.median(cpu_us[kind]):6.0f} us/request"
        )
    print(f"  transcoding costs {rest_cpu - grpc_cpu:.0f} us of gateway CPU per request")


if __name__ == "__main__":
    main()
