"""Two gateways side by side, differing in one setting: the shared driver of the cost
benchmarks (filters_cost.py, tasktree_cost.py). Both proxy to the same nginx, and wrk runs
them in interleaved rounds, so machine noise hits both alike."""

import argparse
import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path

from run import Service, Settings, run_wrk, start_nginx

#: Starts one gateway: (exit stack, scratch directory, name, nginx port) -> its service.
Starter = Callable[[contextlib.ExitStack, Path, str, int], Service]


def interleaved_ab(
    description: str, a: tuple[str, Starter], b: tuple[str, Starter]
) -> tuple[Settings, dict[str, list[float]]]:
    """Parses --rounds/--duration/--connections, runs both gateways, and returns the
    settings and each one's requests/s per round."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    settings = Settings(
        sections=["http1"],
        rounds=args.rounds,
        duration=args.duration,
        warmup=1,
        connections=args.connections,
        threads=1,
        h2_clients=0,
        h2_streams=0,
        grpc_threads=0,
        grpc_messages=0,
        grpc_size=0,
        idle_connections=0,
    )
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        nginx, _ = start_nginx(stack, tmp)
        targets = {name: start(stack, tmp, name, nginx.port) for name, start in (a, b)}
        rps: dict[str, list[float]] = {name: [] for name in targets}
        for service in targets.values():
            run_wrk(service.port, settings, 1)  # warm-up, not recorded
        for _ in range(settings.rounds):
            for name, service in targets.items():
                rps[name].append(run_wrk(service.port, settings, settings.duration).rps)
    return settings, rps
