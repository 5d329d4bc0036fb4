"""A scripted host's behaviour at a moment of the scenario, and its seeded draws.

A `HostScript` is a base behaviour plus changes at given times; `Phases` folds them into
phases once, so the behaviour at any moment is one bisect away.
"""

import bisect
import math
import random

import attrs

from gateway.testing.scenario import HostScript, HostState, Latency, StatusMix


@attrs.frozen
class Behaviour:
    state: HostState
    latency: Latency
    connect_latency: float
    status: StatusMix
    body_size: int


@attrs.frozen
class Answer:
    """A host's answer to one request: its state then ("up", "hang", "down", "reset"),
    and for "up" and "reset" its think time, status and body size."""

    state: HostState
    delay: float = 0.0
    status: int = 0
    body_size: int = 0


class Phases:
    """The host's behaviour over scenario time (seconds from its start)."""

    def __init__(self, script: HostScript) -> None:
        current = Behaviour(
            script.state, script.latency, script.connect_latency, script.status, script.body_size
        )
        self.starts = [0.0]
        self.phases = [current]
        for change in script.at:
            given = {
                name: value
                for name in ("state", "latency", "connect_latency", "status", "body_size")
                if (value := getattr(change, name)) is not None
            }
            current = attrs.evolve(current, **given)
            if change.time == self.starts[-1]:
                self.phases[-1] = current
            else:
                self.starts.append(change.time)
                self.phases.append(current)

    def at(self, elapsed: float) -> Behaviour:
        return self.phases[bisect.bisect_right(self.starts, elapsed) - 1]

    def down_times(self) -> list[float]:
        """When the host goes down (from another state): its open connections are cut."""
        return [
            start
            for start, before, phase in zip(
                self.starts[1:], self.phases, self.phases[1:], strict=False
            )
            if phase.state == "down" and before.state != "down"
        ]


def draw_latency(latency: Latency, rng: random.Random) -> float:
    if latency.fixed is not None:
        return latency.fixed
    if latency.uniform is not None:
        return rng.uniform(*latency.uniform)
    if latency.exponential is not None:
        return rng.expovariate(1 / latency.exponential) if latency.exponential else 0.0
    assert latency.lognormal is not None
    if not latency.lognormal:
        return 0.0
    return rng.lognormvariate(math.log(latency.lognormal), latency.sigma)


def draw_status(mix: StatusMix, rng: random.Random) -> int:
    if len(mix.weights) == 1:
        return mix.weights[0][0]
    statuses = [status for status, _ in mix.weights]
    return rng.choices(statuses, [weight for _, weight in mix.weights])[0]
