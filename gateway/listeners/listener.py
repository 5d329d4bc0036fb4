"""A listener: a bound address, an accept loop, and one task per downstream connection.

The listener task owns a nursery. Its accept loop runs in a cancel scope of its own, so
draining is: cancel the accept scope (stop accepting; the socket closes), tell the HCM to
drain, and put a deadline on the connection nursery. The task returns when its last
connection is done, which is how the server knows the drain finished. Each connection
task closes its socket in `finally`, so a cancelled or crashed handler still sends the
client a FIN (hypercorn#106).

A connection goes through the listener's filter chains (filter_chain.py): if any chain
needs it, the TLS inspector peeks at the ClientHello (SNI, ALPN) within
`listener_filters_timeout`; the most specific matching chain (or the default chain) is
chosen, else the connection is closed and counted in `no_filter_chain_match`; the chain
terminates TLS if it has `tls` (handshake under its own timeout), then runs its network
filters, the last of which (HCM or tcp_proxy) owns the connection until it ends.
"""

import errno
import ipaddress
import logging

import attrs
import trio

from gateway.access_log import AccessLogger
from gateway.config.model import Listener as ListenerConfig
from gateway.errors import StartupError
from gateway.listeners import tls_inspector
from gateway.listeners.filter_chain import (
    ChainBuilder,
    FilterChain,
    build_filter_chains,
    needs_inspection,
    select,
)
from gateway.listeners.network_filter import ConnectionInfo, run_filters
from gateway.listeners.tls import HandshakeFailed, HandshakeTimeout
from gateway.stats import Counter, Gauge, create_stats
from gateway.tasktree import annotate
from gateway.tls_stream import ByteStream

log = logging.getLogger("gateway.listener")

#: accept() errors that mean "out of resources for now", as trio's serve_listeners treats
#: them: log, back off, keep serving the connections we have.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_BACKOFF = 0.1


def format_peer(address: object) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


@attrs.define
class ListenerStats:
    downstream_cx_total: Counter
    downstream_cx_active: Gauge
    no_filter_chain_match: Counter
    #: The ClientHello did not arrive within listener_filters_timeout.
    downstream_pre_cx_timeout: Counter
    #: A chain's TLS handshake did not finish within its handshake_timeout.
    downstream_cx_transport_socket_connect_timeout: Counter


class Listener:
    def __init__(self, name: str, config: ListenerConfig, builder: ChainBuilder) -> None:
        self.name = name
        self.config = config
        scope = builder.store.scope(f"listener.{name}", "listener", {"envoy_listener_name": name})
        self.stats = create_stats(ListenerStats, scope)
        self.chains, self.default_chain = build_filter_chains(builder, config)
        everything = [*self.chains, *([self.default_chain] if self.default_chain else [])]
        self._inspect = needs_inspection(everything)
        self._managers = [m for chain in everything for m in chain.managers]
        #: Opened while building the chains' HTTP connection managers.
        self.access_logs: list[AccessLogger] = builder.access_logs
        self.port: int | None = None
        self._accept_scope = trio.CancelScope()
        self._connections: trio.Nursery | None = None

    def __repr__(self) -> str:
        active = self.stats.downstream_cx_active.value
        return f"<Listener {self.name} {self.config.address} active={active}>"

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        address = self.config.address
        annotate("listener", listener=self.name, address=str(address))
        try:
            sockets = await trio.open_tcp_listeners(address.port, host=address.host)
        except OSError as exc:
            raise StartupError(
                f"listeners.{self.name}: cannot bind {address}: {exc.strerror or exc}"
            ) from None
        self.port = sockets[0].socket.getsockname()[1]
        async with trio.open_nursery() as connections:
            self._connections = connections
            with self._accept_scope:
                async with trio.open_nursery() as acceptors:
                    for sock in sockets:
                        acceptors.start_soon(self._accept, sock, connections, name="accept")
                    task_status.started(self.port)
            for sock in sockets:
                sock.socket.close()

    async def _accept(self, sock: trio.SocketListener, connections: trio.Nursery) -> None:
        while True:
            try:
                stream = await sock.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error("listener %s: accept failed (%s); retrying", self.name, exc.strerror)
                await trio.sleep(_ACCEPT_BACKOFF)
                continue
            try:
                remote = stream.socket.getpeername()
                local_port = stream.socket.getsockname()[1]
            except OSError:  # already reset by the client
                stream.socket.close()
                continue
            info = ConnectionInfo(
                peer=format_peer(remote),
                source_ip=ipaddress.ip_address(remote[0]),
                destination_port=local_port,
            )
            connections.start_soon(self._handle, stream, info, name=f"conn {info.peer}")

    async def _handle(self, stream: trio.SocketStream, info: ConnectionInfo) -> None:
        self.stats.downstream_cx_total.inc()
        self.stats.downstream_cx_active.inc()
        try:
            chain = await self._choose_chain(stream, info)
            if chain is None:
                return
            info.filter_chain = chain.name
            annotate("connection", peer=info.peer, listener=self.name, filter_chain=chain.name)
            downstream: ByteStream = stream
            if chain.tls is not None:
                try:
                    downstream, info.tls = await chain.tls.handshake(stream, info.server_name)
                except HandshakeTimeout:
                    self.stats.downstream_cx_transport_socket_connect_timeout.inc()
                    return
                except HandshakeFailed as exc:
                    log.debug(
                        "listener %s: TLS handshake with %s failed: %s", self.name, info.peer, exc
                    )
                    return
            await run_filters(chain.filters, downstream, info)
        except Exception:
            log.exception("listener %s: connection %s failed", self.name, info.peer)
        finally:
            self.stats.downstream_cx_active.dec()
            await trio.aclose_forcefully(stream)

    async def _choose_chain(
        self, stream: trio.SocketStream, info: ConnectionInfo
    ) -> FilterChain | None:
        """Reads what matching needs (the ClientHello, peeked), then picks the chain;
        None (counted) if the client went quiet or no chain matches."""
        if self._inspect:
            with trio.move_on_after(self.config.listener_filters_timeout):
                try:
                    hello = await tls_inspector.inspect(stream.socket)
                except OSError:
                    return None
                if hello is tls_inspector.Peek.NEED_DATA:
                    return None  # closed before saying anything
                if isinstance(hello, tls_inspector.ClientHello):
                    info.transport_protocol = "tls"
                    info.server_name = hello.server_name
                    info.application_protocols = hello.alpn_protocols
                else:
                    info.transport_protocol = "raw_buffer"
            if info.transport_protocol is None:
                self.stats.downstream_pre_cx_timeout.inc()
                return None
        chain = select(self.chains, info) or self.default_chain
        if chain is None:
            self.stats.no_filter_chain_match.inc()
        return chain

    def drain(self, deadline: float) -> None:
        """Stops accepting; in-flight requests may finish until `deadline` (trio time)."""
        self._accept_scope.cancel()
        for manager in self._managers:
            manager.drain()
        if self._connections is not None:
            self._connections.cancel_scope.deadline = deadline
