"""A listener: a bound address, an accept loop, and one task per downstream connection.

The listener task owns a nursery. Its accept loop runs in a cancel scope of its own, so
draining is: cancel the accept scope (stop accepting; the socket closes), tell the HCM to
drain, and put a deadline on the connection nursery. The task returns when its last
connection is done, which is how the server knows the drain finished. Each connection
task closes its socket in `finally`, so a cancelled or crashed handler still sends the
client a FIN (hypercorn#106).
"""

import errno
import logging

import attrs
import trio

from gateway.config.model import Listener as ListenerConfig
from gateway.errors import StartupError
from gateway.http.conn_manager import HttpConnectionManager
from gateway.stats import Counter, Gauge, StatsStore, create_stats
from gateway.tasktree import annotate

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


class Listener:
    def __init__(
        self, name: str, config: ListenerConfig, hcm: HttpConnectionManager, store: StatsStore
    ) -> None:
        self.name = name
        self.config = config
        self.hcm = hcm
        scope = store.scope(f"listener.{name}", "listener", {"envoy_listener_name": name})
        self.stats = create_stats(ListenerStats, scope)
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
                peer = format_peer(stream.socket.getpeername())
            except OSError:  # already reset by the client
                stream.socket.close()
                continue
            connections.start_soon(self._handle, stream, peer, name=f"conn {peer}")

    async def _handle(self, stream: trio.SocketStream, peer: str) -> None:
        self.stats.downstream_cx_total.inc()
        self.stats.downstream_cx_active.inc()
        try:
            await self.hcm.handle_connection(stream, peer)
        except Exception:
            log.exception("listener %s: connection %s failed", self.name, peer)
        finally:
            self.stats.downstream_cx_active.dec()
            await trio.aclose_forcefully(stream)

    def drain(self, deadline: float) -> None:
        """Stops accepting; in-flight requests may finish until `deadline` (trio time)."""
        self._accept_scope.cancel()
        self.hcm.drain()
        if self._connections is not None:
            self._connections.cancel_scope.deadline = deadline
