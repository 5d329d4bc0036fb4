"""The gateway without sockets: the operator's clusters and listeners, built by the
gateway's own code, with every upstream connection opened by an `UpstreamConnector` the
caller gives and every downstream connection a memory stream handed to the listener's
filter chain.

What a `Listener` does before a connection becomes a `ByteStream` (accepting, the PROXY
header, peeking at the ClientHello, the TLS handshake) is not run: the chain is chosen
from what a client says it is (`ClientHello`-less: its SNI and ALPN are given), and its
filters get the plain stream.
"""

import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from gateway.clusters.manager import ClusterManager
from gateway.clusters.transport_socket import UpstreamConnector
from gateway.config.model import GatewayConfig
from gateway.listeners.filter_chain import ChainBuilder, FilterChain, build_filter_chains, select
from gateway.listeners.network_filter import ConnectionInfo, run_filters
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
    _peers: int = 0

    def connect(
        self,
        listener: str | None = None,
        *,
        server_name: str | None = None,
        alpn: tuple[str, ...] = (),
    ) -> MemoryStream:
        """A client connection to `listener` (the only one, if None), served as the
        listener serves an accepted one; the client's end. Each comes from its own
        address (10.x.y.z), as many clients' would."""
        if listener is None:
            if len(self.listeners) != 1:
                raise ValueError(f"which listener? the config has {sorted(self.listeners)}")
            listener = next(iter(self.listeners))
        target = self.listeners[listener]
        self._peers += 1
        ip = ipaddress.IPv4Address("10.0.0.0") + self._peers
        client, server = memory_stream_pair()
        info = ConnectionInfo(
            peer=f"{ip}:40000",
            source_ip=ip,
            destination_port=target.port,
            source_port=40000,
            destination_ip=ipaddress.IPv4Address("10.255.0.1"),
            transport_protocol="tls" if server_name or alpn else "raw_buffer",
            server_name=server_name,
            application_protocols=alpn,
        )
        self._nursery.start_soon(self._serve, target, server, info, name=f"conn {info.peer}")
        return client

    async def _serve(
        self, target: MemoryListener, stream: MemoryStream, info: ConnectionInfo
    ) -> None:
        try:
            chain = select(target.chains, info) or target.default
            if chain is None:
                return  # no chain matches: the listener closes it, as Envoy does
            info.filter_chain = chain.name
            await run_filters(chain.filters, stream, info)
        finally:
            stream.close_now()

    def stat(self, name: str) -> int | None:
        """A counter's or gauge's value by its Envoy name; None if there is no such stat."""
        return self.store.value(name)


@asynccontextmanager
async def open_memory_gateway(
    config: GatewayConfig, connector: UpstreamConnector
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
            yield MemoryGateway(config, store, clusters, listeners, nursery)
            nursery.cancel_scope.cancel()
    finally:
        for access_log in access_logs:
            access_log.close()
