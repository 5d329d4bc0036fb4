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

Bound in memory (`bind_in_memory`), a listener serves no socket: `gateway test` hands it
simulated connections (`accept_memory`) with what the inspector would have read, and the
rest (chain, TLS if asked, filters, stats, drain, reload) is the same code.
"""

import errno
import ipaddress
import logging
import math
import socket
from collections.abc import Awaitable, Callable
from functools import partial

import attrs
import trio

from gateway.config.model import Address, GatewayConfig
from gateway.config.model import Listener as ListenerConfig
from gateway.errors import StartupError
from gateway.io.byte_stream import ByteStream, TcpStream
from gateway.listeners import proxy_protocol, tls_inspector
from gateway.listeners.filter_chain import (
    ChainBuilder,
    FilterChain,
    build_filter_chains,
    needs_inspection,
    select,
)
from gateway.listeners.network_filter import ConnectionInfo, run_filters
from gateway.listeners.tls import HandshakeFailed, HandshakeTimeout
from gateway.observability.access_log import AccessLogger
from gateway.observability.stats import Counter, Gauge, create_stats, describe
from gateway.observability.tasktree import annotate
from gateway.router.route_table import RouteTables

log = logging.getLogger("gateway.listener")

#: accept() errors that mean "out of resources for now", as trio's serve_listeners treats
#: them: log, back off, keep serving the connections we have.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_BACKOFF = 0.1


async def open_reuse_port_listeners(address: Address) -> list[trio.SocketListener]:
    """Like trio.open_tcp_listeners, with SO_REUSEPORT: several processes listen on one
    address, and the kernel gives each new connection to one of them."""
    infos = await trio.socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    try:
        for family, type_, proto, _, sockaddr in infos:
            sock = trio.socket.socket(family, type_, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                await sock.bind(sockaddr)
                sock.listen(socket.SOMAXCONN)
            except BaseException:
                sock.close()
                raise
            listeners.append(trio.SocketListener(sock))
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    return listeners


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
    #: `proxy_protocol = true`, and a connection opened without a valid PROXY header.
    downstream_cx_proxy_proto_error: Counter
    #: Closed at once: `[overload] max_downstream_connections` were open (Envoy's).
    downstream_global_cx_overflow: Counter


describe(
    "listener",
    {
        "downstream_cx_total": "Connections accepted.",
        "downstream_cx_active": "Connections open now.",
        "no_filter_chain_match": "Connections closed because no filter chain matched them.",
        "downstream_pre_cx_timeout": "Connections closed: no TLS ClientHello within "
        "listener_filters_timeout.",
        "downstream_cx_transport_socket_connect_timeout": "TLS handshakes cut by the chain's "
        "handshake_timeout.",
        "downstream_cx_proxy_proto_error": "Connections closed for want of a valid PROXY header.",
        "downstream_global_cx_overflow": "Connections closed at once: [overload] "
        "max_downstream_connections were open.",
    },
)


class Listener:
    def __init__(self, name: str, config: ListenerConfig, builder: ChainBuilder) -> None:
        self.name = name
        self.config = config
        scope = builder.store.scope(f"listener.{name}", "listener", {"envoy_listener_name": name})
        self.stats = create_stats(ListenerStats, scope)
        self._overload = builder.server.overload
        self.chains, self.default_chain = build_filter_chains(builder, config)
        everything = [*self.chains, *([self.default_chain] if self.default_chain else [])]
        #: Whether the TLS inspector peeks at each ClientHello (SNI, ALPN) before the match.
        self.inspects_client_hello = needs_inspection(everything)
        self._managers = [m for chain in everything for m in chain.managers]
        #: Opened while building the chains' HTTP connection managers.
        self.access_logs: list[AccessLogger] = builder.access_logs
        self.port: int | None = None
        self._sockets: list[trio.SocketListener] = []
        self._handed_over = False
        self._accept_scope = trio.CancelScope()
        self._connections: trio.Nursery | None = None
        #: The cancel scopes of connections being established, and (once draining) how
        #: long they may take.
        self._establishing: set[trio.CancelScope] = set()
        self._drain_grace = math.inf
        #: Set when the listener task has ended (its last connection is done).
        self.stopped = trio.Event()
        #: Listeners with the same settings that handed their sockets to this one at
        #: reloads and still serve their connections: they drain when this one does.
        self._predecessors: list[Listener] = []

    def __repr__(self) -> str:
        active = self.stats.downstream_cx_active.value
        return f"<Listener {self.name} {self.config.address} active={active}>"

    async def bind(self, *, reuse_port: bool = False) -> None:
        """Opens the listening sockets; StartupError if the address is taken. With
        `reuse_port` each worker process binds the address itself and the kernel spreads
        connections over the workers (SO_REUSEPORT)."""
        address = self.config.address
        try:
            if reuse_port:
                self._sockets = await open_reuse_port_listeners(address)
            else:
                self._sockets = await trio.open_tcp_listeners(address.port, host=address.host)
        except OSError as exc:
            raise StartupError(
                f"listeners.{self.name}: cannot bind {address}: {exc.strerror or exc}"
            ) from None
        self.port = self._sockets[0].socket.getsockname()[1]

    def bind_in_memory(self) -> None:
        """Serves no socket: its connections come from `accept_memory` (the scenario
        engine's simulated clients), as if on the configured port."""
        self.port = self.config.address.port

    def take_over(self, previous: "Listener") -> None:
        """Serves on `previous`'s sockets (a reload): the port never closes, and clients
        queued in its backlog are accepted here."""
        self._sockets = previous.hand_over()
        self.port = previous.port

    def close_unstarted(self) -> None:
        """Undoes construction and bind of a listener that will never run (a reload
        that failed half way)."""
        for access_log in self.access_logs:
            access_log.close()
        for sock in self._sockets:
            sock.socket.close()

    def hand_over(self) -> list[trio.SocketListener]:
        """Stops accepting and gives the sockets to this listener's successor."""
        self._handed_over = True
        self._accept_scope.cancel()
        return self._sockets

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Accepts until drained or handed over, then waits for the last connection. The
        access log flushers run here too; the logs close once the last connection is done."""
        annotate("listener", listener=self.name, address=str(self.config.address))
        assert self.port is not None, "bound (or taken over) before it runs"
        try:
            async with trio.open_nursery() as flushers:
                for access_log in self.access_logs:
                    flushers.start_soon(access_log.run_flusher, name="access log flusher")
                async with trio.open_nursery() as connections:
                    self._connections = connections
                    with self._accept_scope:
                        async with trio.open_nursery() as acceptors:
                            for sock in self._sockets:
                                acceptors.start_soon(self._accept, sock, connections, name="accept")
                            task_status.started(self.port)
                            if not self._sockets:  # in memory: "accepting" until drained
                                await trio.sleep_forever()
                    if not self._handed_over:
                        for sock in self._sockets:
                            sock.socket.close()
                flushers.cancel_scope.cancel()
        finally:
            # Only now is every connection done, cancelled or not: none can log any more.
            for access_log in self.access_logs:
                access_log.close()
            self.stopped.set()

    async def _accept(self, sock: trio.SocketListener, connections: trio.Nursery) -> None:
        stop_accepting = self._overload.stop_accepting_connections
        while True:
            # Envoy's stop_accepting_connections: while it is active new connections wait
            # in the kernel's backlog; the accept waiting when it begins is cancelled, so
            # no connection is taken and held.
            await stop_accepting.wait_inactive()
            with stop_accepting.interrupting():
                await self._accept_until_stopped(sock, connections)

    async def _accept_until_stopped(
        self, sock: trio.SocketListener, connections: trio.Nursery
    ) -> None:
        overload = self._overload
        while True:
            try:
                stream = await sock.accept()
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                log.error("listener %s: accept failed (%s); retrying", self.name, exc.strerror)
                await trio.sleep(_ACCEPT_BACKOFF)
                continue
            if self._over_capacity():
                stream.socket.close()
                continue
            try:
                remote = stream.socket.getpeername()
                local = stream.socket.getsockname()
            except OSError:  # already reset by the client
                stream.socket.close()
                continue
            info = ConnectionInfo(
                peer=format_peer(remote),
                source_ip=ipaddress.ip_address(remote[0]),
                destination_port=local[1],
                source_port=remote[1],
                destination_ip=ipaddress.ip_address(local[0]),
            )
            # Counted here, not in the task: a burst of accepts runs before any task does.
            overload.downstream_cx_active += 1
            connections.start_soon(
                self._handle,
                stream,
                info,
                partial(self._establish, stream, info),
                name=f"conn {info.peer}",
            )

    def _over_capacity(self) -> bool:
        """The overload manager's max_downstream_connections is reached (counted)."""
        overload = self._overload
        if overload.downstream_cx_active < overload.max_downstream_connections:
            return False
        self.stats.downstream_global_cx_overflow.inc()
        return True

    def accept_memory(self, stream: ByteStream, info: ConnectionInfo, terminate_tls: bool) -> None:
        """Serves an in-memory connection as an accepted one (`bind_in_memory`): `info`
        says what the listener filters would have read (SNI, ALPN); the chain's TLS is
        terminated only if `terminate_tls` (else its filters get the stream as it is)."""
        assert self._connections is not None, "running"
        if self._over_capacity():
            stream.close_now()
            return
        self._overload.downstream_cx_active += 1
        establish = partial(self._establish_memory, stream, info, terminate_tls)
        self._connections.start_soon(
            self._handle, stream, info, establish, name=f"conn {info.peer}"
        )

    async def _handle(
        self,
        stream: trio.abc.AsyncResource,
        info: ConnectionInfo,
        establish: Callable[[], Awaitable[tuple[FilterChain, ByteStream] | None]],
    ) -> None:
        self.stats.downstream_cx_total.inc()
        self.stats.downstream_cx_active.inc()
        try:
            with trio.CancelScope(deadline=self._drain_grace) as scope:
                self._establishing.add(scope)
                try:
                    established = await establish()
                finally:
                    self._establishing.discard(scope)
            if scope.cancelled_caught or established is None:
                return
            chain, downstream = established
            await run_filters(chain.filters, downstream, info)
        except Exception:
            log.exception("listener %s: connection %s failed", self.name, info.peer)
        finally:
            self.stats.downstream_cx_active.dec()
            self._overload.downstream_cx_active -= 1
            await trio.aclose_forcefully(stream)

    async def _establish(
        self, stream: trio.SocketStream, info: ConnectionInfo
    ) -> tuple[FilterChain, ByteStream] | None:
        """The PROXY header, the filter chain, the TLS handshake: the chain and the stream
        its filters read, or None (counted) if the connection cannot go on."""
        if self.config.proxy_protocol and not await self._read_proxy_header(stream, info):
            return None
        chain = await self._choose_chain(stream, info)
        if chain is None:
            return None
        return await self._secure(chain, TcpStream(stream), info, terminate_tls=True)

    async def _establish_memory(
        self, stream: ByteStream, info: ConnectionInfo, terminate_tls: bool
    ) -> tuple[FilterChain, ByteStream] | None:
        await trio.lowlevel.checkpoint()
        chain = self._match(info)
        if chain is None:
            return None
        return await self._secure(chain, stream, info, terminate_tls)

    async def _secure(
        self, chain: FilterChain, stream: ByteStream, info: ConnectionInfo, terminate_tls: bool
    ) -> tuple[FilterChain, ByteStream] | None:
        """The chain's TLS handshake, if it has TLS (and it is to be terminated): the
        stream its filters read, or None (counted) if the handshake failed."""
        info.filter_chain = chain.name
        annotate("connection", peer=info.peer, listener=self.name, filter_chain=chain.name)
        if chain.tls is None or not terminate_tls:
            return chain, stream
        try:
            downstream, info.tls = await chain.tls.handshake(stream, info.server_name)
        except HandshakeTimeout:
            self.stats.downstream_cx_transport_socket_connect_timeout.inc()
            return None
        except HandshakeFailed as exc:
            log.debug("listener %s: TLS handshake with %s failed: %s", self.name, info.peer, exc)
            return None
        return chain, downstream

    async def _read_proxy_header(self, stream: trio.SocketStream, info: ConnectionInfo) -> bool:
        """Takes the client's address from the PROXY header the L4 balancer sent; False
        (counted) if there was none in time."""
        try:
            with trio.fail_after(self.config.listener_filters_timeout):
                header = await proxy_protocol.read_header(stream.socket)
        except (proxy_protocol.ProxyProtocolError, trio.TooSlowError, OSError) as exc:
            self.stats.downstream_cx_proxy_proto_error.inc()
            log.debug("listener %s: %s: %s", self.name, info.peer, exc)
            return False
        if header.source is not None and header.destination is not None:
            (source_ip, source_port), (destination_ip, destination_port) = (
                header.source,
                header.destination,
            )
            info.peer = format_peer((str(source_ip), source_port))
            info.source_ip, info.source_port = source_ip, source_port
            info.destination_ip, info.destination_port = destination_ip, destination_port
        return True

    async def _choose_chain(
        self, stream: trio.SocketStream, info: ConnectionInfo
    ) -> FilterChain | None:
        """Reads what matching needs (the ClientHello, peeked), then picks the chain;
        None (counted) if the client went quiet or no chain matches."""
        if self.inspects_client_hello:
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
        return self._match(info)

    def _match(self, info: ConnectionInfo) -> FilterChain | None:
        """The chain for what the connection showed; None (counted) if none matches."""
        chain = select(self.chains, info) or self.default_chain
        if chain is None:
            self.stats.no_filter_chain_match.inc()
        return chain

    def adopt(self, predecessor: "Listener") -> None:
        """A reload kept the settings: `predecessor`'s connections carry on, and drain
        when this listener does."""
        self._predecessors += [predecessor, *predecessor._predecessors]
        predecessor._predecessors = []

    def drain(self, deadline: float, grace: float) -> None:
        """Stops accepting (unless handed over already); in-flight requests may finish
        until `deadline` (trio time), then are cut. Connections that are still being
        established (PROXY header, ClientHello, TLS handshake) get until `grace`: one that
        never said a word must not hold the drain for the whole drain timeout."""
        for predecessor in self._predecessors:
            if not predecessor.stopped.is_set():
                predecessor.drain(deadline, grace)
        self._accept_scope.cancel()
        self._drain_grace = grace
        for scope in self._establishing:
            scope.deadline = min(scope.deadline, grace)
        for manager in self._managers:
            manager.drain()
        if self._connections is not None:
            self._connections.cancel_scope.deadline = deadline

    def update_routes(self, config: GatewayConfig, route_tables: RouteTables) -> None:
        """After a reload, this listener's connections (its successor takes the new ones)
        route their next requests by `config`, as far as it still has the virtual hosts
        and filters they name."""
        for manager in [m for lst in (self, *self._predecessors) for m in lst._managers]:
            hcm = manager.config
            if (
                set(hcm.virtual_hosts) <= config.virtual_hosts.keys()
                and set(hcm.http_filters) <= config.http_filters.keys()
            ):
                manager.update_routes(config, route_tables)
