"""WebSocket scale: many idle tunnels through one gateway process.

Starts a trio-websocket echo server and a gateway (each its own process), opens N
concurrent WebSocket connections through the gateway (default 5,000), and reports the
gateway's RSS per idle tunnel and the echo round-trip p50/p99 measured while all of them
are open.

    python bench/ws_scale.py [--connections 5000] [--probes 500]
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio
from trio_websocket import (
    WebSocketConnection,
    WebSocketRequest,
    connect_websocket_url,
    serve_websocket,
)

# Run as a script, Python puts bench/ first on the path; the package needs the checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.peers.gateway import ALL_HOSTS, gateway_argv, gateway_toml
from bench.procfs import rss_kib
from bench.services import free_port, launch, raise_fd_limit, wait_accepting


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
    """WebSocket upgrades allowed; a tunnel holds an upstream connection, so the cluster's
    limit (1,024 by default) must be above the tunnels opened."""
    return gateway_toml(
        listen,
        upstream,
        listener=f'{ALL_HOSTS}\nupgrade = ["websocket"]',
        cluster="max_connections_per_host = 100000",
    )


async def measure(args: argparse.Namespace, gateway_pid: int, port: int) -> dict[str, float]:
    url = f"ws://127.0.0.1:{port}/ws"
    connections: list[WebSocketConnection] = []
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
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with contextlib.ExitStack() as stack:
            argv = [sys.executable, __file__, "--serve-echo", str(upstream_port)]
            wait_accepting(launch(stack, tmp, "echo", upstream_port, argv), 15)
            config = tmp / "gateway.toml"
            config.write_text(gateway_config(gateway_port, upstream_port))
            gateway = launch(stack, tmp, "gateway", gateway_port, gateway_argv(config))
            wait_accepting(gateway, 15)
            result = trio.run(measure, args, gateway.proc.pid, gateway_port)
        errors = gateway.log.read_text().count("ERROR")
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
