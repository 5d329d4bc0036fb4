"""Interleaved rounds: each target runs once per round (round 1: direct, gateway, envoy,
...; round 2: ...), so noise on a shared machine hits every target about equally."""

from __future__ import annotations

import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from bench.services import Service, log_tail
from bench.settings import Settings


class Sample(Protocol):
    """A dataclass with one load run's figures."""

    __dataclass_fields__: ClassVar[dict[str, Any]]
    errors: int

    def error_note(self) -> str: ...


S = TypeVar("S", bound=Sample)
#: Takes one sample: (seconds, warm-up?) -> sample.
Runner = Callable[[int, bool], S]


@dataclass
class Target(Generic[S]):
    """One row of a table: how to take a sample, and which processes must stay up."""

    name: str
    run: Runner[S]
    watch: list[Service]


@dataclass
class Result(Generic[S]):
    name: str
    samples: list[S] = field(default_factory=list)
    failure: str | None = None

    def median(self, attr: str) -> float | None:
        values = [getattr(s, attr) for s in self.samples]
        return statistics.median(values) if values else None


def measure_once(target: Target[S], result: Result[S], seconds: int, *, warmup: bool) -> None:
    """One load run; on failure the target is marked failed and skipped from then on."""
    if result.failure is not None:
        return
    try:
        sample = target.run(seconds, warmup)
        for service in target.watch:
            if service.proc.poll() is not None:
                raise RuntimeError(f"{service.name} exited with code {service.proc.returncode}")
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as exc:
        result.failure = str(exc)
    else:
        if not warmup:
            result.samples.append(sample)
        if sample.errors:
            print(f"  note: {target.name}: {sample.error_note()}")
    if result.failure is not None:
        print(f"  FAILED {target.name}: {result.failure}")
        for service in target.watch:
            print(f"--- {service.name} log (tail) ---\n{log_tail(service.log)}")


def measure(targets: list[Target[S]], settings: Settings) -> list[Result[S]]:
    results: list[Result[S]] = [Result(t.name) for t in targets]
    pairs = list(zip(targets, results, strict=True))
    if settings.warmup > 0:
        print(f"warm-up: {settings.warmup}s per target (not recorded)")
        for target, result in pairs:
            measure_once(target, result, settings.warmup, warmup=True)
    for rnd in range(1, settings.rounds + 1):
        print(f"round {rnd}/{settings.rounds}: " + ", ".join(t.name for t in targets))
        for target, result in pairs:
            measure_once(target, result, settings.duration, warmup=False)
    return results


def failing(reason: str) -> Runner[S]:
    """A runner for a target that failed its gate: every run fails with the gate's reason."""

    def run(seconds: int, warmup: bool) -> S:
        raise RuntimeError(reason)

    return run
