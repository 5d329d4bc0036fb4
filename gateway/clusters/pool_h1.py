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
is one; else, if the borrowers waiting outnumber the connects under way and the limits
allow, it starts a connect; then it waits on the channel (within `max_pending_requests`
unless it started a connect). Connects run in the cluster's nursery, not in the borrower's
task: the new connection goes to the first waiter, or idles for the next borrower, so a
client that goes away mid-connect (or resets its HTTP/2 stream on purpose, thousands of
times) costs no upstream connection, and a failed connect hands its error to the first
waiter. Closing a connection frees capacity, and if borrowers are waiting it sends a `None`
token down the channel to wake one of them to connect anew. Bookkeeping is synchronous and
happens in `finally` blocks, so cancellation at any await can never leak a slot: the lesson
of httpcore#785/#1093.

Expiry: a connection idle longer than `idle_timeout`, or one that became readable while
idle (the upstream closed it), is closed when found, either by a borrower or by the
cluster's reaper task.
"""

import math

import trio

from gateway.clusters.circuit_breakers import ResourceManager
from gateway.clusters.cluster_stats import ClusterStats, HostStats
from gateway.clusters.pool_base import PoolBase, PoolStatistics
from gateway.clusters.transport_socket import UpstreamConnector
from gateway.clusters.upstream_h1 import UpstreamConnection, UpstreamState
from gateway.config.model import Address, Cluster
from gateway.errors import UpstreamConnectError, UpstreamOverflow

_Idle = UpstreamConnection | UpstreamConnectError | None


class HostPool(PoolBase):
    def __init__(
        self,
        address: Address,
        config: Cluster,
        cluster_stats: ClusterStats,
        host_stats: HostStats,
        resources: ResourceManager,
        connector: UpstreamConnector,
    ) -> None:
        super().__init__(address, config, cluster_stats, host_stats, resources, connector)
        # Items are idle connections, or None: a token saying "capacity freed, connect anew",
        # or the error of a failed connect, for the waiter it is handed to. The channel never
        # holds more than the open connections plus woken waiters.
        self._idle_send, self._idle_recv = trio.open_memory_channel[_Idle](math.inf)
        #: Connections open or opening, and of those, opening.
        self._open = 0
        self._connecting = 0
        self._closed = False
        self._nursery: trio.Nursery | None = None

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
            conn.idle_since = trio.current_time()
            self._idle_send.send_nowait(conn)
        else:
            if conn.codec.protocol_error:
                self._cluster_stats.upstream_cx_protocol_error.inc()
            self._discard(conn)

    async def _acquire(self) -> UpstreamConnection:
        deadline = trio.current_time() + self._config.pool_timeout
        while True:
            try:
                item = self._idle_recv.receive_nowait()
            except trio.WouldBlock:
                pass
            else:
                if (conn := self._take(item)) is not None:
                    return conn
                continue
            # A borrower that has a connect started for it is not pending (as before connects
            # moved to the pool): neither the gauge nor max_pending_requests counts it.
            pending = not self._wants_connection()
            if not pending:
                if self._nursery is None:  # not started (a one-off client): connect inline
                    self._reserve()
                    return await self._establish()
                self._start_connect()
                # Whoever asked for a connection waits for it as long as connecting may take.
                deadline = max(deadline, trio.current_time() + self._config.connect_timeout)
            else:
                self._check_pending_breaker()
                self._cluster_stats.upstream_rq_pending_active.inc()
                self._resources.pending_requests.inc()
            # Waiters queue on the channel's receive, which trio serves first come first
            # served; a cancelled receive leaves the queue and takes nothing with it.
            try:
                with trio.move_on_at(deadline):
                    item = await self._idle_recv.receive()
                    if isinstance(item, UpstreamConnection) and not item.requests:
                        return item  # just connected for us: whatever it says is the answer
                    if (conn := self._take(item)) is not None:
                        return conn
                    continue
            finally:
                if pending:
                    self._cluster_stats.upstream_rq_pending_active.dec()
                    self._resources.pending_requests.dec()
            self._cluster_stats.upstream_rq_pending_overflow.inc()
            raise UpstreamOverflow()

    def _take(self, item: _Idle) -> UpstreamConnection | None:
        """A connection fit to lend, or None (a wake-up token, or an expired connection);
        raises the connect error a failed connect handed to this waiter."""
        if isinstance(item, UpstreamConnectError):
            # An error of its own: raising the one handed over would put this frame and the
            # caller's, whose locals name it, in its traceback, a cycle holding the request
            # and its downstream connection until the cyclic GC runs.
            raise UpstreamConnectError(*item.args) from item.__cause__
        return item if item is not None and self._usable(item) else None

    def _wants_connection(self) -> bool:
        """Whether to open another connection: only while the borrowers waiting (this one
        included) outnumber the connects under way, and the limits allow it. A borrower
        that goes away does not take its connect with it (see `_connect_for_waiters`)."""
        waiting = self._idle_recv.statistics().tasks_waiting_receive + 1
        return waiting > self._connecting and self._may_connect(self._open)

    def _usable(self, conn: UpstreamConnection) -> bool:
        idle = trio.current_time() - conn.idle_since
        if idle < self._config.idle_timeout and not conn.is_stale():
            return True
        self._cluster_stats.upstream_cx_idle_timeout.inc()
        self._discard(conn)
        return False

    def _start_connect(self) -> None:
        assert self._nursery is not None
        self._reserve()
        self._connecting += 1
        self._nursery.start_soon(self._connect_for_waiters, name=f"pool {self._label} connect")

    async def _connect_for_waiters(self) -> None:
        """Connects on the pool's behalf, in the cluster's nursery: the connection goes to
        the first waiting borrower, or idles for the next one. A client that resets its
        stream mid-connect so costs no upstream connection; connects are bounded by the
        borrowers actually waiting, however many streams come and go (Envoy's pool does the
        same)."""
        try:
            conn = await self._establish(wake_on_failure=False)
        except UpstreamConnectError as exc:
            if self._idle_recv.statistics().tasks_waiting_receive:
                self._idle_send.send_nowait(exc)  # straight to the first waiter
            return
        finally:
            self._connecting -= 1
        if self._closed:
            self._discard(conn)
        else:
            self._idle_send.send_nowait(conn)

    def _reserve(self) -> None:
        """Counts a connection from the moment it is decided, so limits hold while it opens."""
        self._open += 1
        self._resources.connections.inc()
        self._host_stats.cx_active += 1
        self._cluster_stats.upstream_cx_active.inc()

    async def _establish(self, *, wake_on_failure: bool = True) -> UpstreamConnection:
        try:
            stream = await self._open_tcp()
        except BaseException:
            self._forget(wake=wake_on_failure)
            raise
        return UpstreamConnection(
            stream,
            self._label,
            max_header_bytes=self._config.max_response_headers_kb * 1024,
            parser=self._config.http1_parser,
        )

    def _discard(self, conn: UpstreamConnection) -> None:
        conn.close()
        self._cluster_stats.upstream_cx_destroy.inc()
        self._forget()

    def _forget(self, *, wake: bool = True) -> None:
        """One connection fewer; wake a waiting borrower so it can open a replacement."""
        self._open -= 1
        self._resources.connections.dec()
        self._host_stats.cx_active -= 1
        self._cluster_stats.upstream_cx_active.dec()
        if wake and self._idle_recv.statistics().tasks_waiting_receive and not self._closed:
            self._idle_send.send_nowait(None)
        self._note_closed()

    def start(self, nursery: trio.Nursery) -> None:
        """Connects and the reaper that closes expired idle connections will run in
        `nursery` (the cluster's)."""
        self._nursery = nursery
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
            if isinstance(conn, UpstreamConnection) and self._usable(conn):
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
            if isinstance(conn, UpstreamConnection):
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
