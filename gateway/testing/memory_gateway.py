"""The gateway without sockets: the operator's clusters and listeners, built by the
gateway's own code, with every upstream connection opened by an `UpstreamConnector` the
caller gives and every downstream connection a memory stream handed to the listener's
filter chain.

What a `Listener` does before a connection becomes a `ByteStream` (accepting, the PROXY
header, peeking at the ClientHello) is not run: the chain is chosen from what the caller
says the client sent (its SNI and ALPN), and terminates TLS only if asked to (a test's
client speaks TLS; the scenario engine's clients do not, and the chain's filters get the
cleartext stream).

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
from gateway.io.byte_stream import ByteStream
from gateway.listeners.filter_chain import ChainBuilder, FilterChain, build_filter_chains, select
from gateway.listeners.network_filter import ConnectionInfo, run_filters
from gateway.listeners.tls import HandshakeFailed
from gateway.observability.access_log import AccessLogger
from gateway.observability.stats import StatsStore
from gateway.server.overload import OverloadManager
from gateway.server.state import ServerState
from gateway.testing.memory_stream import MemoryStream, memory_stream_pair


@attrs.frozen
class MemoryListener:
    name: str
    port: int
    chains: list[FilterChain]
    default: FilterChain | None


@attrs.define(eq=False)
class MemoryGateway:
    """A running in-memory gateway: its stats, clusters and listeners."""

    config: GatewayConfig
    store: StatsStore
    clusters: ClusterManager
    listeners: dict[str, MemoryListener]
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
        `alpn` are what the TLS inspector would have read from its ClientHello."""
        if listener is None:
            if len(self.listeners) != 1:
                raise ValueError(f"which listener? the config has {sorted(self.listeners)}")
            listener = next(iter(self.listeners))
        target = self.listeners[listener]
        if peer is None:
            self._peers += 1
            peer = f"{ipaddress.IPv4Address('10.0.0.0') + self._peers}:40000"
        host, _, port = peer.rpartition(":")
        client, server = memory_stream_pair(record_writes=self.record_writes)
        info = ConnectionInfo(
            peer=peer,
            source_ip=ipaddress.ip_address(host),
            destination_port=target.port,
            source_port=int(port),
            destination_ip=ipaddress.IPv4Address("10.255.0.1"),
            transport_protocol="tls" if server_name or alpn else "raw_buffer",
            server_name=server_name,
            application_protocols=alpn,
        )
        self._nursery.start_soon(self._serve, target, server, info, name=f"conn {peer}")
        return client

    async def _serve(
        self, target: MemoryListener, stream: MemoryStream, info: ConnectionInfo
    ) -> None:
        downstream: ByteStream = stream
        try:
            chain = select(target.chains, info) or target.default
            if chain is None:
                return  # no chain matches: the listener closes it, as Envoy does
            info.filter_chain = chain.name
            if chain.tls is not None and self.terminate_tls:  # as the listener does
                downstream, info.tls = await chain.tls.handshake(stream, info.server_name)
            await run_filters(chain.filters, downstream, info)
        except HandshakeFailed:
            pass
        finally:
            stream.close_now()

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
    """Runs `config`'s clusters (warmed: first health checks done) and builds its
    listeners; everything stops when the block ends."""
    store = StatsStore([])
    server = ServerState(OverloadManager(config.overload, store))
    access_logs: list[AccessLogger] = []
    try:
        async with trio.open_nursery() as nursery:
            clusters = ClusterManager(config, store, connector)
            await nursery.start(clusters.run)
            listeners = {}
            for name, listener in config.listeners.items():
                builder = ChainBuilder(name, config, clusters, store, server)
                chains, default = build_filter_chains(builder, listener)
                access_logs += builder.access_logs
                listeners[name] = MemoryListener(name, listener.address.port, chains, default)
            yield MemoryGateway(
                config, store, clusters, listeners, nursery, terminate_tls, record_writes
            )
            nursery.cancel_scope.cancel()
    finally:
        for access_log in access_logs:
            access_log.close()
