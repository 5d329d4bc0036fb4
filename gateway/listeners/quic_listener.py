"""A QUIC listener: one UDP socket, a reader that routes datagrams to connections, and one
task per QUIC connection running HTTP/3 through the listener's connection manager.

Theory of operation
-------------------
The reader task owns the socket's receive side. It reads datagrams in batches and asks
the dispatcher (gateway/protocol/quic_dispatch.py) where each belongs: a known connection
id delivers it to that connection's queue (bounded: a full queue drops the datagram, which
QUIC will send again), a full-size Initial starts a connection, Version Negotiation and
Retry are answered statelessly, anything else is dropped. The reader never waits on a
connection, so one busy connection cannot hold up the others' datagrams.

Each connection is a task in the listener's connection nursery ("conn 127.0.0.1:51234",
as TCP ones are), which runs the connection manager's HTTP/3 side (conn_h3.py); its
streams are tasks in its own nursery. Connection ids are routed for as long as the
connection lives, so a client whose address changes keeps its connection.

Drain stops new connections (their Initials are dropped: the client falls back to TCP
or retries), tells the connection manager to drain (GOAWAY), and bounds the rest by the
drain timeout; the reader runs until the last connection is gone. A reload that keeps the
address hands the socket, the reader and the routing table to the successor: the old
listener's connections go on getting their datagrams from the new reader.
"""

import errno
import ipaddress
import logging
import socket

import attrs
import trio
from aioquic.quic.configuration import QuicConfiguration

from gateway.config.model import Listener as ListenerConfig
from gateway.errors import ConfigError, StartupError
from gateway.http.conn_h3 import Http3Connection
from gateway.http.conn_manager import HttpConnectionManager
from gateway.io.quic_transport import Datagram, QuicTransport
from gateway.listeners.filter_chain import ChainBuilder
from gateway.listeners.listener import Listener, format_peer
from gateway.listeners.network_filter import ConnectionInfo, TlsInfo
from gateway.observability.stats import Counter, Scope, create_stats, describe
from gateway.observability.tasktree import annotate
from gateway.protocol.codec_h3 import ConnectionIdsChanged, H3Codec, H3Event
from gateway.protocol.quic_dispatch import Accept, Deliver, Drop, QuicDispatcher, Reply

log = logging.getLogger("gateway.listener")

#: Datagrams read in one go before other tasks get a turn.
_READ_BATCH = 64
#: The largest UDP payload read (and so accepted): an Ethernet-sized QUIC datagram fits
#: with room to spare; a larger one is cut, fails its integrity check and is dropped.
_MAX_DATAGRAM = 4096
#: The size of the datagrams QUIC sends: fits an Ethernet MTU behind IPv6 and a tunnel.
_SEND_DATAGRAM_SIZE = 1350
#: Kernel buffers: a burst of Initials or of a fast client's packets waits here.
_SOCKET_BUFFER = 4 << 20


@attrs.define
class QuicListenerStats:
    #: Datagrams dropped: for no known connection, malformed, or a full connection queue.
    datagrams_dropped: Counter
    #: Datagrams the kernel had no room for on the way out (QUIC resends them).
    send_dropped: Counter
    retry_sent: Counter
    version_negotiation_sent: Counter


describe(
    "quic_listener",
    {
        "datagrams_dropped": "Datagrams dropped: unroutable, malformed, or the connection's "
        "queue was full.",
        "send_dropped": "Datagrams the socket had no room for (QUIC retransmits them).",
        "retry_sent": "Stateless Retry packets sent (quic.retry = true).",
        "version_negotiation_sent": "Version Negotiation packets sent.",
    },
)


@attrs.define(eq=False)
class _Peer:
    """A QUIC connection as the reader sees it: where its datagrams go, and its ids."""

    inbox: trio.MemorySendChannel[Datagram]
    cids: set[bytes] = attrs.Factory(set)


class _Endpoint:
    """What a QUIC listener hands its successor at a reload: the socket, the routing
    table and the reader's cancel scope."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.dispatcher: QuicDispatcher[_Peer] | None = None
        self.reader_scope = trio.CancelScope()


def quic_configuration(config: ListenerConfig, where: str) -> QuicConfiguration:
    """aioquic's server configuration for a QUIC listener; ConfigError naming the
    certificate's TOML path if it cannot be loaded."""
    options = config.quic
    configuration = QuicConfiguration(
        is_client=False,
        alpn_protocols=["h3"],
        idle_timeout=options.idle_timeout,
        max_data=options.initial_connection_window_size,
        max_stream_data=options.initial_stream_window_size,
        max_datagram_size=_SEND_DATAGRAM_SIZE,
        congestion_control_algorithm="cubic",
    )
    cert = options.certificates[0]
    try:
        configuration.load_cert_chain(cert.certificate_chain, cert.private_key)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError([f"{where}.quic.certificates[0]: cannot load: {exc}"]) from None
    return configuration


class QuicListener(Listener):
    def __init__(self, name: str, config: ListenerConfig, builder: ChainBuilder) -> None:
        super().__init__(name, config, builder)
        self._configuration = quic_configuration(config, f"listeners.{name}")
        self._hcm: HttpConnectionManager = self.chains[0].managers[0]
        self._scope: Scope = builder.store.scope(
            f"listener.{name}", "listener", {"envoy_listener_name": name}
        )
        self.quic_stats = create_stats(QuicListenerStats, self._scope.child("quic"))
        self._http3_ports = builder.server.http3_ports
        self._endpoint: _Endpoint | None = None
        self._dispatcher: QuicDispatcher[_Peer] = QuicDispatcher(
            connection_id_length=self._configuration.connection_id_length,
            supported_versions=self._configuration.supported_versions,
            retry=config.quic.retry,
        )
        self._accepting = True
        self._stop = trio.Event()

    def __repr__(self) -> str:
        active = self.stats.downstream_cx_active.value
        return f"<QuicListener {self.name} {self.config.address} active={active}>"

    # -- the socket ----------------------------------------------------------------------

    async def bind(self, *, reuse_port: bool = False) -> None:
        address = self.config.address
        try:
            infos = await trio.socket.getaddrinfo(
                address.host, address.port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
            )
            family, type_, proto, _, sockaddr = infos[0]
            sock = socket.socket(family, type_, proto)
            try:
                if reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                    sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
                sock.setblocking(False)
                sock.bind(sockaddr)
            except BaseException:
                sock.close()
                raise
        except OSError as exc:
            raise StartupError(
                f"listeners.{self.name}: cannot bind {address} (UDP): {exc.strerror or exc}"
            ) from None
        self._endpoint = _Endpoint(sock)
        self._endpoint.dispatcher = self._dispatcher
        self.port = sock.getsockname()[1]
        self._http3_ports[self.name] = self.port

    def take_over(self, previous: "Listener") -> None:
        assert isinstance(previous, QuicListener), "a reload keeps a listener's protocol"
        endpoint = previous.hand_over_endpoint()
        # The old connections' ids stay routed: the new reader delivers their datagrams.
        assert endpoint.dispatcher is not None
        self._dispatcher = endpoint.dispatcher
        self._endpoint = _Endpoint(endpoint.sock)
        self._endpoint.dispatcher = self._dispatcher
        self.port = previous.port
        if self.port is not None:
            self._http3_ports[self.name] = self.port

    def hand_over_endpoint(self) -> _Endpoint:
        assert self._endpoint is not None
        self._handed_over = True
        self._endpoint.reader_scope.cancel()
        self._accepting = False
        self._stop.set()
        return self._endpoint

    def close_unstarted(self) -> None:
        for access_log in self.access_logs:
            access_log.close()
        if self._endpoint is not None:
            self._endpoint.sock.close()

    # -- the listener task ---------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        annotate("listener", listener=self.name, address=f"{self.config.address} (QUIC)")
        endpoint = self._endpoint
        assert endpoint is not None and self.port is not None, "bound before it runs"
        try:
            async with trio.open_nursery() as outer:
                for access_log in self.access_logs:
                    outer.start_soon(access_log.run_flusher, name="access log flusher")
                async with trio.open_nursery() as connections:
                    self._connections = connections
                    outer.start_soon(self._read, endpoint, connections, name="quic reader")
                    task_status.started(self.port)
                    await self._stop.wait()  # drain or hand-over; then the last connection
                if not self._handed_over:
                    endpoint.reader_scope.cancel()
                    endpoint.sock.close()
                    self._http3_ports.pop(self.name, None)
                outer.cancel_scope.cancel()
        finally:
            for access_log in self.access_logs:
                access_log.close()
            self.stopped.set()

    async def _read(self, endpoint: _Endpoint, connections: trio.Nursery) -> None:
        sock = endpoint.sock
        with endpoint.reader_scope:
            while True:
                await trio.lowlevel.wait_readable(sock)
                for _ in range(_READ_BATCH):
                    try:
                        data, addr = sock.recvfrom(_MAX_DATAGRAM)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as exc:
                        # An ICMP error for an earlier send (ECONNREFUSED): not ours to act on.
                        if exc.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                            log.warning("listener %s: recvfrom failed: %s", self.name, exc)
                        continue
                    self._on_datagram(sock, data, addr, connections)

    def _on_datagram(
        self, sock: socket.socket, data: bytes, addr: tuple[str, int], connections: trio.Nursery
    ) -> None:
        now = trio.current_time()
        decision = self._dispatcher.classify(data, addr, now)
        if isinstance(decision, Deliver):
            try:
                decision.connection.inbox.send_nowait((data, addr))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.quic_stats.datagrams_dropped.inc()
        elif isinstance(decision, Accept):
            self._open_connection(sock, decision, data, addr, connections)
        elif isinstance(decision, Reply):
            counter = getattr(self.quic_stats, f"{decision.kind}_sent")
            counter.inc()
            try:
                sock.sendto(decision.datagram, addr)
            except OSError:
                self.quic_stats.send_dropped.inc()
        else:
            assert isinstance(decision, Drop)
            self.quic_stats.datagrams_dropped.inc()

    def _open_connection(
        self,
        sock: socket.socket,
        accept: Accept,
        data: bytes,
        addr: tuple[str, int],
        connections: trio.Nursery,
    ) -> None:
        overload = self._overload
        if not self._accepting or overload.stop_accepting_connections.active:
            self.quic_stats.datagrams_dropped.inc()
            return
        if overload.downstream_cx_active >= overload.max_downstream_connections:
            self.stats.downstream_global_cx_overflow.inc()
            return
        codec = H3Codec(
            configuration=self._configuration,
            original_destination_connection_id=accept.original_destination_connection_id,
            retry_source_connection_id=accept.retry_source_connection_id,
            options=self.config.quic,
            max_header_bytes=self.config.max_request_headers_kb * 1024,
        )
        send, inbox = trio.open_memory_channel[Datagram](self.config.quic.max_queued_datagrams)
        peer = _Peer(send)
        for cid in (accept.original_destination_connection_id, codec.host_cid):
            self._route(peer, cid)
        send.send_nowait((data, addr))
        local = sock.getsockname()
        info = ConnectionInfo(
            peer=format_peer(addr),
            source_ip=ipaddress.ip_address(addr[0]),
            destination_port=local[1],
            source_port=addr[1],
            destination_ip=ipaddress.ip_address(local[0]),
            transport_protocol="quic",
            application_protocols=("h3",),
            tls=TlsInfo("TLSv1.3", "-", "h3", None),
        )
        overload.downstream_cx_active += 1
        connections.start_soon(
            self._serve, sock, codec, peer, inbox, info, name=f"conn {info.peer}"
        )

    def _route(self, peer: _Peer, cid: bytes) -> None:
        peer.cids.add(cid)
        self._dispatcher.route(cid, peer)

    def _routes_changed(self, peer: _Peer, change: ConnectionIdsChanged) -> None:
        for cid in change.issued:
            self._route(peer, cid)
        for cid in change.retired:
            peer.cids.discard(cid)
            self._dispatcher.unroute(cid, peer)

    async def _serve(
        self,
        sock: socket.socket,
        codec: H3Codec,
        peer: _Peer,
        inbox: trio.MemoryReceiveChannel[Datagram],
        info: ConnectionInfo,
    ) -> None:
        self.stats.downstream_cx_total.inc()
        self.stats.downstream_cx_active.inc()
        transport = QuicTransport[H3Event](sock, codec, inbox, self.quic_stats.send_dropped.inc)
        conn = Http3Connection(
            self._hcm,
            codec,
            transport,
            info,
            self.config.quic,
            routes=lambda change: self._routes_changed(peer, change),
        )
        try:
            await self._hcm.handle_http3_connection(conn)
        except Exception:
            log.exception("listener %s: connection %s failed", self.name, info.peer)
        finally:
            for cid in peer.cids:
                self._dispatcher.unroute(cid, peer)
            peer.inbox.close()
            self.stats.downstream_cx_active.dec()
            self._overload.downstream_cx_active -= 1
            if conn.closed is not None:
                side = "rx" if conn.closed.by_peer else "tx"
                name = conn.closed.error_name
                self._scope.counter(
                    f"http3.downstream.{side}.quic_connection_close_error_code_{name}"
                ).inc()

    # -- drain ---------------------------------------------------------------------------

    def drain(self, deadline: float, grace: float) -> None:
        """New connections are refused; open ones are told to go (GOAWAY) and cut at
        `deadline`; the reader serves them until the last one is done."""
        for predecessor in self._predecessors:
            if not predecessor.stopped.is_set():
                predecessor.drain(deadline, grace)
        self._accepting = False
        self._drain_grace = grace
        for manager in self._managers:
            manager.drain()
        if self._connections is not None:
            self._connections.cancel_scope.deadline = deadline
        self._stop.set()
