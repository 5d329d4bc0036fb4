"""The gateway without sockets: the operator's clusters and listeners, built by the
gateway's own code, with every upstream connection opened by an `UpstreamConnector` the
caller gives and every downstream connection a memory stream handed to the listener's
filter chain.

The listeners are the gateway's own (`Listener.bind_in_memory`), with their stats, drains
and reloads; what one does before a connection becomes a `ByteStream` (accepting, the
PROXY header, peeking at the ClientHello) is not run: the chain is chosen from what the
caller says the client sent (its SNI and ALPN), and terminates TLS only if asked to (a
test's client speaks TLS; the scenario engine's clients do not, and the chain's filters
get the cleartext stream).

The tests' `memory_gateway` (tests/memory_net.py) is this, with TLS and a network of
upstreams the test runs.
"""

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from gateway.clusters.manager import ClusterManager
from gateway.clusters.transport_socket import UpstreamConnector
from gateway.config.model import GatewayConfig
from gateway.listeners.listener import Listener
from gateway.listeners.network_filter import ConnectionInfo
from gateway.listeners.swap import swap_listeners
from gateway.observability.stats import StatsStore
from gateway.router.route_table import build_route_tables
from gateway.server.gateway import build_listeners, drain_deadlines
from gateway.server.overload import OverloadManager
from gateway.server.state import ServerState
from gateway.testing.memory_stream import MemoryStream, memory_stream_pair


@attrs.define(eq=False)
class MemoryGateway:
    """A running in-memory gateway: its stats, clusters and listeners."""

    config: GatewayConfig
    store: StatsStore
    clusters: ClusterManager
    listeners: dict[str, Listener]
    _server: ServerState
    _nursery: trio.Nursery
    #: Whether a chain with TLS terminates it (the client then speaks TLS, as a test's
    #: may); if not, its filters get the cleartext stream (the scenario engine's clients).
    terminate_tls: bool = False
    #: Whether client connections record their writes (`MemoryStream.writes`).
    record_writes: bool = False
    _peers: int = 0

    def connect(
        self,
        listener: str | None = None,
        *,
        peer: str | None = None,
        server_name: str | None = None,
        alpn: tuple[str, ...] = (),
    ) -> MemoryStream:
        """A client connection to `listener` (the only one, if None), served as the
        listener serves an accepted one; the client's end. It comes from `peer`, or
        from an address of its own (10.x.y.z), as many clients' would; `server_name` and
        `alpn` are what the TLS inspector would have read from its ClientHello.
        ConnectionRefusedError if a reload removed the listener."""
        if listener is None:
            if len(self.listeners) != 1:
                raise ValueError(f"which listener? the config has {sorted(self.listeners)}")
            listener = next(iter(self.listeners))
        target = self.listeners.get(listener)
        if target is None:
            raise ConnectionRefusedError(f"no listener {listener!r} since the last reload")
        if peer is None:
            self._peers += 1
            peer = f"{ipaddress.IPv4Address('10.0.0.0') + self._peers}:40000"
        host, _, port = peer.rpartition(":")
        client, server = memory_stream_pair(record_writes=self.record_writes)
        info = ConnectionInfo(
            peer=peer,
            source_ip=ipaddress.ip_address(host),
            destination_port=target.config.address.port,
            source_port=int(port),
            destination_ip=ipaddress.IPv4Address("10.255.0.1"),
            transport_protocol="tls" if server_name or alpn else "raw_buffer",
            server_name=server_name,
            application_protocols=alpn,
        )
        target.accept_memory(server, info, self.terminate_tls)
        return client

    async def reload(self, config: GatewayConfig) -> list[str]:
        """Takes `config` as `Gateway.reload` does: changed clusters replaced (warmed
        first, the old ones drained), new listeners for new connections, the old ones'
        connections routed the new way or drained. Returns what changed."""
        route_tables = build_route_tables(config)  # on the loop: no time passes meanwhile
        listeners = build_listeners(
            config, self.clusters, self.store, self._server, route_tables, in_memory=True
        )
        for listener in listeners.values():
            listener.bind_in_memory()
        drain = drain_deadlines(config.server)
        changes = await self.clusters.update(config, drain[0])
        changes += await swap_listeners(
            self.listeners, listeners, config, route_tables, drain, self._start
        )
        self.config, self.listeners = config, listeners
        return changes

    async def _start(self, listener: Listener) -> None:
        await self._nursery.start(listener.run, name=f"listener {listener.name}")

    def stat(self, name: str) -> int | None:
        """A counter's or gauge's value by its Envoy name; None if there is no such stat."""
        return self.store.value(name)


@asynccontextmanager
async def open_memory_gateway(
    config: GatewayConfig,
    connector: UpstreamConnector,
    *,
    terminate_tls: bool = False,
    record_writes: bool = False,
) -> AsyncIterator[MemoryGateway]:
    """Runs `config`'s clusters (warmed: first health checks done) and its listeners, in
    memory; everything stops when the block ends."""
    store = StatsStore([])
    server = ServerState(OverloadManager(config.overload, store))
    async with trio.open_nursery() as nursery:
        clusters = ClusterManager(config, store, connector)
        await nursery.start(clusters.run)
        listeners = build_listeners(config, clusters, store, server, in_memory=True)
        gateway = MemoryGateway(
            config, store, clusters, listeners, server, nursery, terminate_tls, record_writes
        )
        for listener in listeners.values():
            listener.bind_in_memory()
            await gateway._start(listener)
        yield gateway
        nursery.cancel_scope.cancel()
