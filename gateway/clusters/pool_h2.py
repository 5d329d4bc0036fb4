"""The HTTP/2 connection pool of one upstream host: requests borrow streams.

A borrower takes a stream on the first connection with room (fewer open streams than
min(our max_concurrent_streams, the peer's)); if none has room and the host is under
`max_connections_per_host`, it connects a new one; else it waits, up to `pool_timeout`
(503, flag UO), for a stream to end or a SETTINGS change. A connection that got GOAWAY
takes no new streams and is closed once its last stream ends. Waiting borrowers queue
first come first served; a cancelled one leaves the queue. Each connection's reader and
keepalive tasks run in the host's nursery, so they outlive the borrowing requests.

When the borrower is done the stream is finished: a stream that did not complete in both
directions is reset with CANCEL (the upstream sees the cancellation at once), and all data
not yet credited is credited, so the connection window never leaks.
"""

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from gateway.clusters.circuit_breakers import ResourceManager
from gateway.clusters.cluster_stats import ClusterStats, HostStats
from gateway.clusters.pool_base import PoolBase, PoolStatistics
from gateway.clusters.transport_socket import UpstreamConnector
from gateway.clusters.upstream_h2 import H2UpstreamConnection, H2UpstreamStream
from gateway.config.model import Address, Cluster
from gateway.errors import UpstreamOverflow, UpstreamReset


class H2HostPool(PoolBase):
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
        self._connections: list[H2UpstreamConnection] = []
        self._connecting = 0
        self._nursery: trio.Nursery | None = None
        #: Borrowers waiting for a stream, first come first served: a change in capacity
        #: wakes the first; whoever gets a stream wakes the next, in case room is left.
        self._waiters: deque[trio.Event] = deque()

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<H2HostPool {self._label} open={s.open} waiting={s.waiting}>"

    def drain(self) -> None:
        """The host is leaving: no new streams; each connection closes after its last."""
        for conn in self._connections:
            conn.draining = True
            if not conn.streams:
                conn.close()
        self._start_draining()

    def statistics(self) -> PoolStatistics:
        live = [c for c in self._connections if not c.closed]
        return PoolStatistics(
            open=len(live) + self._connecting,
            idle=sum(1 for c in live if not c.streams),
            waiting=len(self._waiters),
            max_connections=self._config.max_connections_per_host,
        )

    def start(self, nursery: trio.Nursery) -> None:
        """Connections' reader tasks will run in `nursery` (the cluster's)."""
        self._nursery = nursery
        nursery.start_soon(self._reap, name=f"h2 pool {self._label} reaper")

    @asynccontextmanager
    async def borrow(self) -> AsyncIterator[H2UpstreamStream]:
        conn = await self._acquire()
        stream = conn.open_stream()
        try:
            yield stream
        finally:
            if stream.finish():
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    try:
                        await conn.transport.flush()
                    except UpstreamReset:
                        pass
            conn.idle_since = trio.current_time()
            if conn.draining and not conn.streams:
                conn.close()
            self._wake()

    async def _acquire(self) -> H2UpstreamConnection:
        deadline = trio.current_time() + self._config.pool_timeout
        woken = False
        while True:
            if woken or not self._waiters:  # never overtake the borrowers already in line
                conn = self._available()
                if conn is not None:
                    if woken:
                        self._wake()  # there may be room for the next in line too
                    return conn
                # Connections on their way will have room for this many streams: wait for
                # one rather than connect again (N concurrent first requests: 1 connection).
                coming = self._connecting * self._config.http2.max_concurrent_streams
                if len(self._waiters) >= coming and self._may_connect(
                    len(self._connections) + self._connecting
                ):
                    return await self._connect()
            await self._wait_in_line(deadline, first=woken)
            woken = True

    def _available(self) -> H2UpstreamConnection | None:
        self._connections = [c for c in self._connections if not c.closed]
        for conn in self._connections:
            if conn.available:
                return conn
        return None

    async def _wait_in_line(self, deadline: float, *, first: bool) -> None:
        """Waits for this borrower's turn; `first` keeps the place of one that was woken
        but found no room after all."""
        self._check_pending_breaker()
        turn = trio.Event()
        if first:
            self._waiters.appendleft(turn)
        else:
            self._waiters.append(turn)
        self._cluster_stats.upstream_rq_pending_active.inc()
        self._resources.pending_requests.inc()
        try:
            with trio.move_on_at(deadline):
                await turn.wait()
                return
        finally:
            self._cluster_stats.upstream_rq_pending_active.dec()
            self._resources.pending_requests.dec()
            if not turn.is_set():  # timed out or cancelled: leave the line
                self._waiters.remove(turn)
        self._cluster_stats.upstream_rq_pending_overflow.inc()
        raise UpstreamOverflow()

    async def _connect(self) -> H2UpstreamConnection:
        assert self._nursery is not None, "the cluster manager starts pools before use"
        self._connecting += 1
        self._resources.connections.inc()
        try:
            stream = await self._open_tcp()
        except BaseException:
            self._connecting -= 1
            self._resources.connections.dec()
            self._wake()
            self._note_closed()
            raise
        self._connecting -= 1
        conn = H2UpstreamConnection(stream, self._label, self._config, self._wake)
        self._connections.append(conn)
        self._wake()  # the new connection has room for whoever waits in line
        self._nursery.start_soon(self._run_connection, conn, name=f"h2 upstream {self._label}")
        return conn

    async def _run_connection(self, conn: H2UpstreamConnection) -> None:
        self._host_stats.cx_active += 1
        self._cluster_stats.upstream_cx_active.inc()
        try:
            await conn.transport.flush()
            await conn.run()
        except UpstreamReset:
            conn.close()
        finally:
            self._resources.connections.dec()
            self._host_stats.cx_active -= 1
            self._cluster_stats.upstream_cx_active.dec()
            self._cluster_stats.upstream_cx_destroy.inc()
            self._wake()
            self._note_closed()

    def _wake(self) -> None:
        """Capacity may have changed: the first waiter in line gets to look."""
        if self._waiters:
            self._waiters.popleft().set()

    async def _reap(self) -> None:
        interval = max(self._config.idle_timeout / 2, 0.05)
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for conn in self._connections:
                if not conn.streams and now - conn.idle_since >= self._config.idle_timeout:
                    self._cluster_stats.upstream_cx_idle_timeout.inc()
                    conn.close()

    def close(self) -> None:
        for conn in self._connections:
            conn.close()
