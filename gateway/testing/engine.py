"""The scenario engine: the operator's config, run by the gateway's own code against
simulated hosts and clients, in virtual time.

Theory of operation: the `VirtualClock` jumps to the next deadline whenever every task is
blocked (as trio's `MockClock` with `autojump_threshold=0` does), so a scenario costs the
CPU its requests take, not the time it describes. Everything that waits in the gateway
(route and per-try timeouts, retry back-offs, outlier detection's interval, health check
intervals, idle timeouts) waits on trio's clock, so it all runs as configured. The run
is deterministic for a seed: the hosts' and clients' draws come from generators seeded
from it, and so do the `random` module (the load balancers, retry jitter, outlier
enforcement) and trio's scheduler (which otherwise reverses a batch of runnable tasks at
random).
"""

import contextlib
import functools
import os
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import trio

from gateway.config.load import load_config
from gateway.config.model import GatewayConfig
from gateway.errors import ConfigError
from gateway.observability.stats import Counter, Gauge
from gateway.testing.client import Outcome, SimulatedClient
from gateway.testing.scenario import Scenario
from gateway.testing.simulated_config import has_access_log, simulation_notes
from gateway.testing.simulation import endpoints, open_simulation
from gateway.testing.timeline import Event
from gateway.testing.upstream_host import HostRecord
from gateway.testing.virtual_clock import VirtualClock

#: After the clients' last send, how long requests still in flight may take before the
#: run ends without them (a hanging host with no route timeout would hold it forever).
#: Longer than the HCM's default stream idle timeout (five minutes), so that what the
#: gateway's own timeouts would end, they end, rather than tying with the run's end.
DRAIN_TIME = 600.0


@attrs.define
class ScenarioResult:
    scenario: Scenario
    outcomes: list[Outcome]
    #: Requests sent with no outcome (still in flight when the run ended).
    unfinished: int
    hosts: dict[str, HostRecord]
    events: list[Event]
    #: Every counter and gauge at the end, by Envoy name.
    stats: dict[str, int]
    virtual_seconds: float
    wall_seconds: float
    #: What of the config the run did not simulate (`simulation_notes`).
    notes: list[str] = attrs.Factory(list)
    #: The access log's lines, when the scenario checks them (None: the config has none).
    access_log_lines: list[str] | None = None
    #: The scenario's `task_snapshots`: (scenario time, listener, /tasks text).
    task_snapshots: list[tuple[float, str, str]] = attrs.Factory(list)
    #: Downstream connections and request streams still alive at the end, as /tasks
    #: shows them (`Simulation.leftover_tasks`).
    leftover_tasks: dict[str, list[dict[str, Any]]] = attrs.Factory(dict)


def load_reloads(scenario: Scenario) -> list[GatewayConfig]:
    """The configs of the scenario's reloads, loaded and validated as `gateway serve`
    would before taking them; ConfigError naming the reload and each problem."""
    configs, errors = [], []
    for i, reload in enumerate(scenario.reloads):
        try:
            configs.append(load_config(reload.config))
        except ConfigError as exc:
            where = f"{scenario.source}: reloads[{i}].config"
            errors += [f"{where}: {error}" for error in exc.errors]
    if errors:
        raise ConfigError(errors)
    return configs


def check_against_config(
    scenario: Scenario, config: GatewayConfig, reloads: Sequence[GatewayConfig] = ()
) -> None:
    """What a scenario says that its config (and the configs it reloads) contradicts;
    ConfigError."""
    known = {address for c in (config, *reloads) for address in endpoints(c)}
    errors = [
        f'{scenario.source}: hosts."{address}": no cluster of the config has this endpoint '
        f"(it has {', '.join(sorted(known)) or 'none'})"
        for address in scenario.hosts
        if address not in known
    ]
    for i, client in enumerate(scenario.clients):
        if client.listener is not None and client.listener not in config.listeners:
            errors.append(
                f"{scenario.source}: clients[{i}].listener: no listener {client.listener!r} "
                f"(the config has {', '.join(sorted(config.listeners))})"
            )
        elif client.listener is None and len(config.listeners) != 1:
            errors.append(
                f"{scenario.source}: clients[{i}].listener: the config has "
                f"{len(config.listeners)} listeners; say which"
            )
    if errors:
        raise ConfigError(errors)


def run_scenario(
    config: GatewayConfig, scenario: Scenario, *, access_log: str | None = None
) -> ScenarioResult:
    """Runs `scenario` against `config` in virtual time (a fresh trio run); ConfigError if
    they do not fit together. The access logs go to `access_log`, or nowhere, or (when
    the scenario checks them and no path is given) to a temporary file read back."""
    reloads = load_reloads(scenario)
    check_against_config(scenario, config, reloads)
    with _access_log_file(access_log, bool(scenario.expect.access_log)) as (path, offset):
        _seed(scenario.seed)
        started = time.perf_counter()
        result = trio.run(_run, config, reloads, scenario, path, clock=VirtualClock())
        result.wall_seconds = time.perf_counter() - started
        if scenario.expect.access_log and has_access_log(config):
            assert path is not None
            with open(path, encoding="utf-8") as lines:
                lines.seek(offset)
                result.access_log_lines = lines.read().splitlines()
    result.notes = simulation_notes(config)
    return result


def _seed(seed: int) -> None:
    """The gateway draws from the `random` module; trio's scheduler from a generator of
    its own, seeded here the way trio's Hypothesis plugin seeds it. Should a trio release
    move that generator, runs stay correct but may differ in the order of simultaneous
    events from one run to the next."""
    random.seed(seed)
    scheduler = getattr(trio._core._run, "_r", None)
    if isinstance(scheduler, random.Random):
        scheduler.seed(seed)


@contextlib.contextmanager
def _access_log_file(path: str | None, wanted: bool) -> Iterator[tuple[str | None, int]]:
    """Where the access logs go, and where this run's lines will start in it: `path`
    (appended to, as the gateway does), a temporary file if the lines are `wanted`, or
    nowhere."""
    if path is not None:
        yield path, os.path.getsize(path) if os.path.exists(path) else 0
        return
    if not wanted:
        yield None, 0
        return
    with tempfile.TemporaryDirectory(prefix="gateway-test-") as directory:
        yield os.path.join(directory, "access.log"), 0


async def _run(
    config: GatewayConfig,
    reloads: list[GatewayConfig],
    scenario: Scenario,
    access_log: str | None,
) -> ScenarioResult:
    simulation_of = open_simulation(
        config, scenario.hosts, seed=scenario.seed, access_log=access_log, later=reloads
    )
    async with simulation_of as simulation:
        start = simulation.start
        outcomes: list[Outcome] = []
        clients = [
            SimulatedClient(
                script,
                functools.partial(simulation.connect, script.listener, script.server_name),
                random.Random(f"{scenario.seed}/client/{script.name}"),
                start,
                start + scenario.duration,
                outcomes,
            )
            for script in scenario.clients
        ]
        snapshots: list[tuple[float, str, str]] = []

        async def take_snapshot(at: float) -> None:
            await trio.sleep_until(start + at)
            snapshots.extend((at, name, text) for name, text in simulation.listener_tasks().items())

        async def reload(at: float, config: GatewayConfig, path: str) -> None:
            await trio.sleep_until(start + at)
            await simulation.reload(config, path)

        with trio.move_on_at(start + scenario.duration + DRAIN_TIME):
            async with trio.open_nursery() as running:
                for client in clients:
                    running.start_soon(client.run, name=f"client {client.script.name}")
                for at in scenario.task_snapshots:
                    running.start_soon(take_snapshot, at, name=f"task snapshot at {at}s")
                for step, new in zip(scenario.reloads, reloads, strict=True):
                    running.start_soon(
                        reload, step.time, new, step.config, name=f"reload at {step.time}s"
                    )
        for client in clients:
            client.close_idle()
        leftover = await simulation.leftover_tasks()
        stats = {
            stat.name: stat.value
            for stat in simulation.gateway.store
            if isinstance(stat, Counter | Gauge)
        }
    return ScenarioResult(
        scenario,
        outcomes,
        sum(client.sent for client in clients) - len(outcomes),
        {address: host.record for address, host in simulation.hosts.items()},
        simulation.events,
        stats,
        virtual_seconds=trio.current_time() - start,
        wall_seconds=0.0,
        leftover_tasks=leftover,
        task_snapshots=snapshots,
    )
