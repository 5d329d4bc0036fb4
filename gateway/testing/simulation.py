"""A simulation: the operator's config running over memory streams against simulated
hosts, in the caller's trio run. The scenario engine drives one with scripted clients;
a test drives one with its own requests (`Simulation.request`), on trio's MockClock if it
wants virtual time (the pytest plugin's `gateway_simulation`)."""

import random
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from gateway.config.model import Address, ByteSize, GatewayConfig
from gateway.errors import GatewayError
from gateway.io.byte_stream import ByteStream
from gateway.io.trio_util import PEER_GONE
from gateway.observability.task_query import TaskQuery
from gateway.observability.tasktree import render_text, snapshot
from gateway.observability.tasktree import set_enabled as set_task_tree
from gateway.testing.behaviour import Phases
from gateway.testing.client import ClientConnection
from gateway.testing.memory_gateway import MemoryGateway, open_memory_gateway
from gateway.testing.scenario import HostScript, RequestSpec
from gateway.testing.simulated_config import simulated_config
from gateway.testing.timeline import Event, recording_log, sample_counters
from gateway.testing.upstream_host import SimulatedHost
from gateway.testing.virtual_clock import wait_all_tasks_blocked


class SimulatedNetwork:
    """The clusters' `UpstreamConnector`: an address is a simulated host's (a connect to
    any other is refused, as a closed port refuses)."""

    def __init__(self, hosts: Mapping[str, SimulatedHost]) -> None:
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


@attrs.define(eq=False)
class Simulation:
    gateway: MemoryGateway
    #: Every cluster endpoint's host, by address.
    hosts: dict[str, SimulatedHost]
    #: trio time at which scenario time 0 is.
    start: float
    #: The timeline so far: ejections, health changes, counts each second, the log.
    events: list[Event]
    #: Where the access logs go (`simulated_config`), for the configs reloaded too.
    access_log: str | None = None

    async def reload(self, config: GatewayConfig, source: str = "") -> list[str]:
        """A hot reload to `config` (as `simulated_config` changes it), recorded in the
        timeline; what changed."""
        changes = await self.gateway.reload(simulated_config(config, self.access_log))
        detail = f"config reloaded{f' from {source}' if source else ''}: " + (
            "; ".join(changes) or "routes and filters"
        )
        self.events.append(Event(trio.current_time() - self.start, "reload", detail=detail))
        return changes

    async def leftover_tasks(self) -> dict[str, list[dict[str, Any]]]:
        """Once every task has settled: the downstream connections and request streams
        still alive, by kind ("connection", "stream"), as /tasks shows them. After the
        clients closed their connections, any is a task that outlived its request."""
        await wait_all_tasks_blocked()
        found: dict[str, list[dict[str, Any]]] = {"connection": [], "stream": []}
        nodes = [snapshot()]
        while nodes:
            node = nodes.pop()
            if node.get("kind") in found:
                found[node["kind"]].append(node)
            nodes += node.get("children", [])
        return found

    def listener_tasks(self) -> dict[str, str]:
        """Each listener's connections and streams now, as `/tasks?listener=NAME` shows
        them (text)."""
        tree = snapshot()
        return {
            name: render_text(TaskQuery(listener=name).apply(tree))
            for name in self.gateway.listeners
        }

    async def connect(
        self, listener: str | None = None, server_name: str | None = None
    ) -> ByteStream:
        """A client connection to `listener` (the only one, if None), which chooses its
        filter chain as if the client's ClientHello offered `server_name`."""
        await trio.lowlevel.checkpoint()
        return self.gateway.connect(listener, server_name=server_name)

    async def request(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body_size: int = 0,
        authority: str = "example.com",
        listener: str | None = None,
    ) -> int | None:
        """One request on a new connection to `listener`; its response's status, or None
        if the connection ended without one."""
        spec = RequestSpec(method, path, authority, dict(headers or {}), ByteSize(body_size))
        connection = ClientConnection(self.gateway.connect(listener))
        try:
            return await connection.exchange(spec, "request")
        except (*PEER_GONE, GatewayError):
            return None
        finally:
            connection.stream.close_now()


@asynccontextmanager
async def open_simulation(
    config: GatewayConfig,
    hosts: Mapping[str, HostScript] | None = None,
    *,
    seed: int | str = 0,
    access_log: str | None = None,
    later: Sequence[GatewayConfig] = (),
) -> AsyncIterator[Simulation]:
    """Runs `config` (as `simulated_config` changes it) with a simulated host at every
    cluster endpoint (of the configs it will `reload` to, too), scripted by `hosts` (by
    address; a host with no script answers 200 at once); everything stops when the block
    ends."""
    scripts = hosts or {}
    start = trio.current_time()
    # Tasks annotated as a server's are (`[admin] task_tree`), for `leftover_tasks`.
    set_task_tree(config.admin is None or config.admin.task_tree)
    events: list[Event] = []
    runnable = simulated_config(config, access_log)
    addresses = {name: address for c in (config, *later) for name, address in endpoints(c).items()}
    with recording_log(start, events):
        async with trio.open_nursery() as nursery:
            simulated = {
                name: SimulatedHost(
                    address,
                    Phases(scripts.get(name, HostScript())),
                    random.Random(f"{seed}/{name}"),
                    nursery,
                    start,
                )
                for name, address in addresses.items()
            }
            for name, host in simulated.items():
                nursery.start_soon(host.run, name=f"host {name} script")
            async with open_memory_gateway(runnable, SimulatedNetwork(simulated)) as gateway:
                nursery.start_soon(sample_counters, gateway.clusters, start, events)
                yield Simulation(gateway, simulated, start, events, access_log)
            nursery.cancel_scope.cancel()
