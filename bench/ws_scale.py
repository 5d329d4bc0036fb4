"""WebSocket scale: many idle tunnels through one gateway process.

Starts a trio-websocket echo server and a gateway (each its own process), opens N
concurrent WebSocket connections through the gateway (default 5,000), and reports the
gateway's RSS per idle tunnel and the echo round-trip p50/p99 measured while all of them
are open.

    python bench/ws_scale.py [--connections 5000] [--probes 500]
"""

import argparse
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio
from trio_websocket import WebSocketRequest, connect_websocket_url, serve_websocket

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_fd_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def echo_server(port: int) -> None:
    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except Exception:
            return

    await serve_websocket(handler, "127.0.0.1", port, None)


def gateway_config(listen: int, upstream: int) -> str:
    return f"""
[listeners.edge]
address = "127.0.0.1:{listen}"
virtual_hosts = ["all"]
upgrade = ["websocket"]
[virtual_hosts.all]
domains = ["*"]
[[virtual_hosts.all.routes]]
match = {{ prefix = "/" }}
cluster = "echo"
[clusters.echo]
endpoints = ["127.0.0.1:{upstream}"]
max_connections_per_host = 100000
"""


async def wait_for_port(port: int) -> None:
    with trio.fail_after(15):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


async def measure(args: argparse.Namespace, gateway_pid: int, port: int) -> dict[str, float]:
    url = f"ws://127.0.0.1:{port}/ws"
    connections = []
    async with trio.open_nursery() as nursery:
        baseline = rss_kib(gateway_pid)
        limiter = trio.CapacityLimiter(args.parallel)
        started = time.monotonic()

        async def open_one() -> None:
            async with limiter:
                connections.append(await connect_websocket_url(nursery, url))

        async with trio.open_nursery() as openers:
            for _ in range(args.connections):
                openers.start_soon(open_one)
        open_seconds = time.monotonic() - started
        await trio.sleep(1.0)  # let the gateway settle
        loaded = rss_kib(gateway_pid)
        rtts = []
        for i in range(args.probes):
            ws = connections[(i * 7919) % len(connections)]
            t0 = time.perf_counter()
            await ws.send_message(f"probe {i}")
            await ws.get_message()
            rtts.append((time.perf_counter() - t0) * 1000)
        for ws in connections:
            await ws.aclose()
        nursery.cancel_scope.cancel()
    quantiles = statistics.quantiles(rtts, n=100)
    return {
        "connections": len(connections),
        "open_seconds": open_seconds,
        "rss_baseline_kib": baseline,
        "rss_loaded_kib": loaded,
        "kib_per_tunnel": (loaded - baseline) / len(connections),
        "p50_ms": quantiles[49],
        "p99_ms": quantiles[98],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--probes", type=int, default=500, help="echo round trips measured")
    parser.add_argument("--parallel", type=int, default=100, help="handshakes in flight")
    parser.add_argument("--serve-echo", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_fd_limit()
    if args.serve_echo:
        trio.run(echo_server, args.serve_echo)
        return
    upstream_port, gateway_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.toml"
        config.write_text(gateway_config(gateway_port, upstream_port))
        echo = subprocess.Popen([sys.executable, __file__, "--serve-echo", str(upstream_port)])
        log = open(Path(tmp) / "gateway.log", "w")  # noqa: SIM115
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", str(config), "--log-level", "warning"],
            cwd=ROOT,
            stderr=log,
        )
        try:
            trio.run(wait_for_port, upstream_port)
            trio.run(wait_for_port, gateway_port)
            result = trio.run(measure, args, gateway.pid, gateway_port)
        finally:
            for proc in (gateway, echo):
                proc.send_signal(signal.SIGTERM)
            for proc in (gateway, echo):
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()
        errors = (Path(tmp) / "gateway.log").read_text().count("ERROR")
    print(f"cores: {os.cpu_count()}")
    print(
        f"{result['connections']:,} idle WebSocket tunnels through one gateway process "
        f"(opened in {result['open_seconds']:.1f}s)"
    )
    print(
        f"  gateway RSS: {result['rss_baseline_kib'] / 1024:.1f} MiB idle -> "
        f"{result['rss_loaded_kib'] / 1024:.1f} MiB with all open"
    )
    print(f"  RSS per idle tunnel: {result['kib_per_tunnel']:.1f} KiB (aim: under 20 KiB)")
    print(
        f"  echo round trip with all open: p50 {result['p50_ms']:.2f} ms, "
        f"p99 {result['p99_ms']:.2f} ms ({args.probes} probes)"
    )
    print(f"  gateway ERROR log lines: {errors}")


if __name__ == "__main__":
    main()
