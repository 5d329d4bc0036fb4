"""The scenario engine: the operator's config, run by the gateway's own code against
simulated hosts and clients, in virtual time.

Theory of operation: trio's `MockClock` with `autojump_threshold=0` jumps the clock to the
next deadline whenever every task is blocked, so a scenario costs the CPU its requests
take, not the time it describes. Everything that waits in the gateway (route and per-try
timeouts, retry back-offs, outlier detection's interval, health check intervals, idle
timeouts) waits on trio's clock, so it all runs as configured. The run is deterministic
for a seed: the hosts' and clients' draws come from generators seeded from it, and so do
the `random` module (the load balancers, retry jitter, outlier enforcement) and trio's
scheduler (which otherwise reverses a batch of runnable tasks at random).
"""

import random
import time

import attrs
import trio
import trio.testing

from gateway.config.model import Address, GatewayConfig
from gateway.errors import ConfigError
from gateway.io.byte_stream import ByteStream
from gateway.observability.stats import Counter, Gauge
from gateway.testing.behaviour import Timeline
from gateway.testing.client import Outcome, SimulatedClient
from gateway.testing.memory_gateway import MemoryGateway, open_memory_gateway
from gateway.testing.memory_stream import MemoryStream
from gateway.testing.scenario import HostScript, Scenario
from gateway.testing.simulated_config import simulated_config
from gateway.testing.timeline import Event, recording_log, sample_counters
from gateway.testing.upstream_host import HostRecord, SimulatedHost

#: After the clients' last send, how long requests still in flight may take before the
#: run ends without them (a hanging host with no route timeout would hold it forever).
DRAIN_TIME = 300.0


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


class SimulatedNetwork:
    """The clusters' `UpstreamConnector`: an address is a simulated host's (a connect to
    any other is refused, as a closed port refuses)."""

    def __init__(self, hosts: dict[str, SimulatedHost]) -> None:
        self.hosts = hosts

    async def __call__(self, address: Address) -> ByteStream:
        host = self.hosts.get(str(address))
        if host is None:
            await trio.lowlevel.checkpoint()
            raise ConnectionRefusedError(f"no simulated host at {address}")
        return await host.connect()


def endpoints(config: GatewayConfig) -> dict[str, Address]:
    """Every cluster endpoint's address, once each, by its text."""
    return {str(e.address): e.address for c in config.clusters.values() for e in c.endpoints}


def check_against_config(scenario: Scenario, config: GatewayConfig) -> None:
    """What a scenario says that its config contradicts; ConfigError."""
    known = set(endpoints(config))
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
    they do not fit together."""
    check_against_config(scenario, config)
    runnable = simulated_config(config, access_log)
    # The gateway draws from the `random` module; trio's scheduler from its own generator
    # (seeded the way trio's Hypothesis plugin seeds it).
    random.seed(scenario.seed)
    trio._core._run._r.seed(scenario.seed)
    started = time.perf_counter()
    result = trio.run(_run, runnable, scenario, clock=trio.testing.MockClock(autojump_threshold=0))
    result.wall_seconds = time.perf_counter() - started
    return result


async def _run(config: GatewayConfig, scenario: Scenario) -> ScenarioResult:
    start = trio.current_time()
    end = start + scenario.duration
    events: list[Event] = []
    outcomes: list[Outcome] = []
    clients: list[SimulatedClient] = []
    with recording_log(start, events):
        async with trio.open_nursery() as nursery:
            hosts = {
                name: SimulatedHost(
                    address,
                    Timeline(scenario.hosts.get(name, HostScript())),
                    random.Random(f"{scenario.seed}/{name}"),
                    nursery,
                    start,
                )
                for name, address in endpoints(config).items()
            }
            for name, host in hosts.items():
                nursery.start_soon(host.run, name=f"host {name} script")
            async with open_memory_gateway(config, SimulatedNetwork(hosts)) as gateway:
                nursery.start_soon(sample_counters, gateway.clusters, start, events)
                clients = _clients(scenario, gateway, start, end, outcomes)
                with trio.move_on_at(end + DRAIN_TIME):
                    async with trio.open_nursery() as running:
                        for client in clients:
                            running.start_soon(client.run, name=f"client {client.script.name}")
                stats = {
                    stat.name: stat.value
                    for stat in gateway.store
                    if isinstance(stat, Counter | Gauge)
                }
            nursery.cancel_scope.cancel()
    return ScenarioResult(
        scenario,
        outcomes,
        sum(client.sent for client in clients) - len(outcomes),
        {address: host.record for address, host in hosts.items()},
        events,
        stats,
        virtual_seconds=trio.current_time() - start,
        wall_seconds=0.0,
    )


def _clients(
    scenario: Scenario,
    gateway: MemoryGateway,
    start: float,
    end: float,
    outcomes: list[Outcome],
) -> list[SimulatedClient]:
    clients = []
    for script in scenario.clients:

        def connect(listener: str | None = script.listener) -> MemoryStream:
            return gateway.connect(listener)

        rng = random.Random(f"{scenario.seed}/client/{script.name}")
        clients.append(SimulatedClient(script, connect, rng, start, end, outcomes))
    return clients
