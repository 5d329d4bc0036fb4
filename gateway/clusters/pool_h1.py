"""The HTTP/1.1 connection pool of one upstream host.

Theory of operation
-------------------
Idle connections wait in a trio memory channel. A request *borrows* a connection with
`async with pool.borrow() as conn:`; when the block ends the connection goes back to the
channel only if the exchange finished cleanly on both sides (the codec says it is reusable). Any
exception, including Cancelled from a client that went away or a route timeout, closes it
instead: a cancelled write may have sent half a request, so such a connection is poison.

Capacity is an open-connection count checked against `max_connections_per_host` and the
cluster's `max_connections` circuit breaker. A borrower takes an idle connection if there
is one, else opens a new one if under the limits, else waits on the channel (if the
`max_pending_requests` breaker lets it). Closing a connection frees capacity, and if
borrowers are waiting it sends a `None` token down the channel to wake one of them to
connect anew. Bookkeeping is
synchronous and happens in `finally` blocks, so cancellation at any await (including in the
middle of a connect) can never leak a slot: the lesson of httpcore#785/#1093.

Expiry: a connection idle longer than `idle_timeout`, or one that became readable while
idle (the upstream closed it), is closed when found, either by a borrower or by the
cluster's reaper task.
"""

import math
import time

import trio

from gateway.clusters.circuit_breakers import ResourceManager
from gateway.clusters.cluster_stats import ClusterStats, HostStats
from gateway.clusters.pool_base import PoolBase, PoolStatistics
from gateway.clusters.upstream_h1 import UpstreamConnection, UpstreamState
from gateway.config.model import Address, Cluster
from gateway.errors import UpstreamOverflow


class HostPool(PoolBase):
    def __init__(
        self,
        address: Address,
        config: Cluster,
        cluster_stats: ClusterStats,
        host_stats: HostStats,
        resources: ResourceManager,
    ) -> None:
        super().__init__(address, config, cluster_stats, host_stats, resources)
        # Items are idle connections, or None: a token saying "capacity freed, connect anew".
        # The channel never holds more than the open connections plus woken waiters.
        self._idle_send, self._idle_recv = trio.open_memory_channel[UpstreamConnection | None](
            math.inf
        )
        self._open = 0
        self._closed = False

    def __repr__(self) -> str:
        s = self.statistics()
        return (
            f"<HostPool {self._label} open={s.open} idle={s.idle} waiting={s.waiting}"
            f"/{s.max_connections}>"
        )

    def statistics(self) -> PoolStatistics:
        channel = self._idle_recv.statistics()
        return PoolStatistics(
            open=self._open,
            idle=channel.current_buffer_used,
            waiting=channel.tasks_waiting_receive,
            max_connections=self._config.max_connections_per_host,
        )

    def borrow(self) -> "_Borrow":
        """Lends a connection for one exchange (`async with pool.borrow() as conn:`);
        raises UpstreamOverflow/UpstreamConnectError."""
        return _Borrow(self)

    def _give_back(self, conn: UpstreamConnection, failed: bool) -> None:
        if not failed and conn.codec.reusable and conn.keep_alive and not self._closed:
            conn.codec.start_next_cycle()
            conn.state = UpstreamState.READY
            conn.idle_since = time.monotonic()
            self._idle_send.send_nowait(conn)
        else:
            if conn.codec.protocol_error:
                self._cluster_stats.upstream_cx_protocol_error.inc()
            self._discard(conn)

    async def _acquire(self) -> UpstreamConnection:
        deadline = trio.current_time() + self._config.pool_timeout
        while True:
            try:
                conn = self._idle_recv.receive_nowait()
            except trio.WouldBlock:
                pass
            else:
                if conn is not None and self._usable(conn):
                    return conn
                continue
            if self._may_connect(self._open):
                return await self._connect()
            # Waiters queue on the channel's receive, which trio serves first come first
            # served; a cancelled receive leaves the queue and takes nothing with it.
            self._check_pending_breaker()
            self._cluster_stats.upstream_rq_pending_active.inc()
            self._resources.pending_requests.inc()
            try:
                with trio.move_on_at(deadline):
                    conn = await self._idle_recv.receive()
                    if conn is not None and self._usable(conn):
                        return conn
                    continue
            finally:
                self._cluster_stats.upstream_rq_pending_active.dec()
                self._resources.pending_requests.dec()
            self._cluster_stats.upstream_rq_pending_overflow.inc()
            raise UpstreamOverflow()

    def _usable(self, conn: UpstreamConnection) -> bool:
        if time.monotonic() - conn.idle_since < self._config.idle_timeout and not conn.is_stale():
            return True
        self._cluster_stats.upstream_cx_idle_timeout.inc()
        self._discard(conn)
        return False

    async def _connect(self) -> UpstreamConnection:
        self._open += 1
        self._resources.connections.inc()
        self._host_stats.cx_active += 1
        self._cluster_stats.upstream_cx_active.inc()
        try:
            stream = await self._open_tcp()
        except BaseException:
            self._forget()
            raise
        return UpstreamConnection(
            stream, self._label, max_header_bytes=self._config.max_response_headers_kb * 1024
        )

    def _discard(self, conn: UpstreamConnection) -> None:
        conn.close()
        self._cluster_stats.upstream_cx_destroy.inc()
        self._forget()

    def _forget(self) -> None:
        """One connection fewer; wake a waiting borrower so it can open a replacement."""
        self._open -= 1
        self._resources.connections.dec()
        self._host_stats.cx_active -= 1
        self._cluster_stats.upstream_cx_active.dec()
        if self._idle_recv.statistics().tasks_waiting_receive and not self._closed:
            self._idle_send.send_nowait(None)
        self._note_closed()

    def start(self, nursery: trio.Nursery) -> None:
        """Starts the reaper that closes expired idle connections, in the cluster's nursery."""
        nursery.start_soon(self._reap, name=f"pool {self._label} reaper")

    async def _reap(self) -> None:
        interval = max(self._config.idle_timeout / 2, 0.05)
        while True:
            await trio.sleep(interval)
            self.reap_idle()

    def reap_idle(self) -> None:
        """Closes idle connections that expired or were closed by the upstream."""
        keep = []
        while True:
            try:
                conn = self._idle_recv.receive_nowait()
            except trio.WouldBlock:
                break
            if conn is not None and self._usable(conn):
                keep.append(conn)
        for conn in keep:
            self._idle_send.send_nowait(conn)

    def close(self) -> None:
        """Closes idle connections; borrowed ones are closed when their borrower is done
        (so closing is also how a leaving host drains)."""
        self._closed = True
        while True:
            try:
                conn = self._idle_recv.receive_nowait()
            except trio.WouldBlock:
                break
            if conn is not None:
                self._discard(conn)

    def drain(self) -> None:
        """The host is leaving: idle connections close now, borrowed ones on return."""
        self.close()
        self._start_draining()


class _Borrow:
    """`async with pool.borrow()`: a plain class, as this runs once per request (an
    @asynccontextmanager costs a generator and its frames each time). Any exception,
    Cancelled included, discards the connection."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: HostPool) -> None:
        self._pool = pool
        self._conn: UpstreamConnection | None = None

    async def __aenter__(self) -> UpstreamConnection:
        conn = self._conn = await self._pool._acquire()
        conn.state = UpstreamState.BUSY
        conn.requests += 1
        return conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        assert self._conn is not None
        self._pool._give_back(self._conn, failed=exc_type is not None)
