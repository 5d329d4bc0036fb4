"""Two gateways side by side: the shared driver of the A/B benchmarks (filters_cost.py,
tasktree_cost.py, checkout_ab.py). Both proxy to the same nginx, and the load generators
run them in interleaved rounds, so machine noise hits both alike."""

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.load.h2load import H2Sample, h2load_runner
from bench.load.wrk import WrkSample, wrk_runner
from bench.measure import Result, Runner, Target, measure_once
from bench.peers.gateway import start_configured
from bench.peers.nginx import start_nginx
from bench.procfs import cpu_seconds
from bench.services import Service
from bench.settings import Settings

#: One gateway of an A/B: its label in the output, the name of its config and log files,
#: and its config: (its port, nginx's port) -> TOML.
Side = tuple[str, str, Callable[[int, int], str]]


def ab_parser(
    description: str, connections: int = 16, *, h2load: bool = False
) -> argparse.ArgumentParser:
    """--rounds/--duration/--connections, and with `h2load` its --h2-clients/--h2-streams."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=connections, help="wrk -c")
    if h2load:
        parser.add_argument("--h2-clients", type=int, default=10, help="h2load -c")
        parser.add_argument("--h2-streams", type=int, default=10, help="h2load -m")
    else:
        parser.set_defaults(h2_clients=0, h2_streams=0)
    return parser


def ab_settings(args: argparse.Namespace, sections: list[str]) -> Settings:
    return Settings(
        sections=sections,
        rounds=args.rounds,
        duration=args.duration,
        warmup=1,
        connections=args.connections,
        threads=1,
        h2_clients=args.h2_clients,
        h2_streams=args.h2_streams,
        grpc_threads=0,
        grpc_messages=0,
        grpc_size=0,
        idle_connections=0,
    )


@dataclass
class CpuSample:
    """One load run: requests/s, and the CPU time the gateway spent per request. On a
    shared machine, other work takes cores from the gateway and moves its requests/s far
    more than its CPU time per request."""

    rps: float
    requests: int
    errors: int
    cpu_us: float  # the gateway's user + system CPU time per request, microseconds
    load_note: str

    def error_note(self) -> str:
        return self.load_note


#: The A and the B of one measurement (same load, one gateway each).
Pair = tuple[Target[CpuSample], Target[CpuSample]]


def cpu_costed(
    service: Service, nginx: Service, run: Runner[WrkSample] | Runner[H2Sample]
) -> Target[CpuSample]:
    """The load `run` against the gateway `service`, its CPU time measured around it."""

    def costed(seconds: int, warmup: bool) -> CpuSample:
        before = cpu_seconds(service.proc.pid)
        sample = run(seconds, warmup)
        used = cpu_seconds(service.proc.pid) - before
        cpu_us = used / max(1, sample.requests) * 1e6
        return CpuSample(sample.rps, sample.requests, sample.errors, cpu_us, sample.error_note())

    return Target(service.name, costed, [service, nginx])


def wrk_target(service: Service, nginx: Service, settings: Settings) -> Target[CpuSample]:
    runner = wrk_runner(service.port, threads=settings.threads, connections=settings.connections)
    return cpu_costed(service, nginx, runner)


def h2load_target(service: Service, nginx: Service, settings: Settings) -> Target[CpuSample]:
    runner = h2load_runner(service.port, clients=settings.h2_clients, streams=settings.h2_streams)
    return cpu_costed(service, nginx, runner)


def run_pairs(
    pairs: Sequence[Pair], settings: Settings
) -> list[tuple[Result[CpuSample], Result[CpuSample]]]:
    """A warm-up per target, then rounds: each round runs every pair, A first in odd rounds
    and B first in even ones, so neither side always follows the other (or the other
    pair's load). Exits if a run fails (its log tail is printed by measure_once)."""
    runs = [[(t, Result[CpuSample](t.name)) for t in pair] for pair in pairs]
    for target, result in (run for pair in runs for run in pair):
        measure_once(target, result, settings.warmup, warmup=True)
    for rnd in range(settings.rounds):
        print(f"round {rnd + 1}/{settings.rounds}", flush=True)
        for pair in runs:
            for target, result in pair[:: -1 if rnd % 2 else 1]:
                measure_once(target, result, settings.duration, warmup=False)
    if failed := [r.name for pair in runs for _, r in pair if r.failure is not None]:
        sys.exit(f"failed: {', '.join(failed)}")
    return [(a, b) for (_, a), (_, b) in runs]


def start_side(stack: contextlib.ExitStack, tmp: Path, side: Side, upstream: int) -> Service:
    _, name, config = side
    return start_configured(stack, tmp, name, lambda port: config(port, upstream))


def interleaved_ab(description: str, a: Side, b: Side) -> tuple[Settings, dict[str, list[float]]]:
    """Parses the flags, runs both gateways under wrk, and returns the settings and each
    one's requests/s per round, by label."""
    settings = ab_settings(ab_parser(description).parse_args(), ["http1"])
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        nginx, _ = start_nginx(stack, tmp)
        services = [start_side(stack, tmp, side, nginx.port) for side in (a, b)]
        first, second = (wrk_target(s, nginx, settings) for s in services)
        [(ra, rb)] = run_pairs([(first, second)], settings)
    return settings, {a[0]: [s.rps for s in ra.samples], b[0]: [s.rps for s in rb.samples]}
