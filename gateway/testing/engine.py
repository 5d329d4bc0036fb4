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

import functools
import os
import random
import tempfile
import time
from collections.abc import Sequence

import trio

from gateway.config.load import load_config
from gateway.config.model import GatewayConfig
from gateway.errors import ConfigError
from gateway.observability.stats import Counter, Gauge
from gateway.testing.client import Outcome, SimulatedClient
from gateway.testing.result import ScenarioResult, TaskSnapshot
from gateway.testing.scenario import Scenario
from gateway.testing.simulated_config import has_access_log, simulation_notes
from gateway.testing.simulation import endpoints, open_simulation
from gateway.testing.virtual_clock import VirtualClock
from gateway.testing.workers import merge_results, run_workers

#: After the clients' last send, how long requests still in flight may take before the
#: run ends without them (a hanging host with no route timeout would hold it forever).
#: Longer than the HCM's default stream idle timeout (five minutes), so that what the
#: gateway's own timeouts would end, they end, rather than tying with the run's end.
DRAIN_TIME = 600.0


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
    """Runs `scenario` against `config` in virtual time (fresh trio runs, one per
    `Scenario.workers`, each in a process of its own when there are several); ConfigError
    if they do not fit together. The access logs are appended to `access_log` if given,
    and read back when the scenario checks them."""
    reloads = load_reloads(scenario)
    check_against_config(scenario, config, reloads)
    wanted = bool(scenario.expect.access_log) and has_access_log(config)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gateway-test-") as directory:
        # A log file per worker, joined after the run: the workers' buffered writes
        # to one file could cut each other's lines.
        logs: list[str | None] = [
            os.path.join(directory, f"access.{index}.log") if access_log or wanted else None
            for index in range(scenario.workers)
        ]
        results = run_workers(functools.partial(run_worker, config, reloads, scenario), logs)
        lines = [line for path in logs if path is not None for line in _read_lines(path)]
    result = merge_results(results)
    result.wall_seconds = time.perf_counter() - started
    if access_log is not None:
        with open(access_log, "a", encoding="utf-8") as out:
            out.writelines(f"{line}\n" for line in lines)
    if wanted:
        result.access_log_lines = lines
    result.notes = simulation_notes(config)
    return result


def run_worker(
    config: GatewayConfig,
    reloads: list[GatewayConfig],
    scenario: Scenario,
    index: int,
    count: int,
    access_log: str | None,
) -> ScenarioResult:
    """Worker `index` of `count`: the whole config, its share of the clients, hosts as
    scripted (their draws its own). Worker 0's seeds are the scenario's, so that one
    worker runs as the scenario always did."""
    seed = scenario.seed if index == 0 else f"{scenario.seed}/worker {index}"
    _seed(seed)
    shard = (index, count)
    return trio.run(_run, config, reloads, scenario, access_log, shard, seed, clock=VirtualClock())


def _read_lines(path: str) -> list[str]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as lines:
        return lines.read().splitlines()


def _seed(seed: int | str) -> None:
    """The gateway draws from the `random` module; trio's scheduler from a generator of
    its own, seeded here the way trio's Hypothesis plugin seeds it. Should a trio release
    move that generator, runs stay correct but may differ in the order of simultaneous
    events from one run to the next."""
    random.seed(seed)
    scheduler = getattr(trio._core._run, "_r", None)
    if isinstance(scheduler, random.Random):
        scheduler.seed(seed)


async def _run(
    config: GatewayConfig,
    reloads: list[GatewayConfig],
    scenario: Scenario,
    access_log: str | None,
    shard: tuple[int, int],
    seed: int | str,
) -> ScenarioResult:
    simulation_of = open_simulation(
        config, scenario.hosts, seed=seed, access_log=access_log, later=reloads
    )
    async with simulation_of as simulation:
        start = simulation.start
        outcomes: list[Outcome] = []
        clients = [
            SimulatedClient(
                script,
                functools.partial(simulation.connect, script.listener, script.server_name),
                random.Random(f"{seed}/client/{script.name}"),
                start,
                start + scenario.duration,
                outcomes,
                shard,
            )
            for script in scenario.clients
        ]
        snapshots: list[TaskSnapshot] = []

        async def take_snapshot(at: float) -> None:
            await trio.sleep_until(start + at)
            tasks = simulation.listener_tasks()
            snapshots.extend(TaskSnapshot(at, name, text) for name, text in tasks.items())

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
