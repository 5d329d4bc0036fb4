"""What HTTP/2 and HTTP/3 connections share above their codecs: a table of request
streams, each a task with an encoder of its own.

Request body chunks go into a stream's channel as they arrive; the client cannot send
more than the window it was granted, and bytes are credited back only once forwarded
(`body_consumed`), so the channel is unbounded in items and bounded in bytes. Data for a
stream nobody will read is credited at once, or the connection window would leak. A
client that leaves abandons every stream it had open (flag DC). An extended CONNECT
(RFC 8441, RFC 9220) is accepted with a 200, after which the stream's DATA carries the
tunnel (`stream_tunnel.py`).
"""

import math
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

from gateway.http.active_stream import ActiveStream, BodyItem, ResponseState
from gateway.http.connection import ConnectionCallbacks
from gateway.http.stream_tunnel import StreamTunnelEndpoint
from gateway.listeners.network_filter import ConnectionInfo
from gateway.protocol.events import Data, EndStream, RequestHeaders
from gateway.protocol.headers import HeaderMap, ResponseHead, strip_hop_by_hop


class StreamEncoder:
    """The per-stream state a multiplexed connection keeps, and the parts of a stream's
    ResponseEncoder that do not depend on the protocol; each protocol's encoder writes the
    head, body, trailers and credit."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        self.body: trio.MemorySendChannel[BodyItem] | None = None
        #: Bytes delivered to the stream but not yet credited back to the client.
        self.uncredited = 0
        self.scope = trio.CancelScope()
        self.active: ActiveStream | None = None
        self.reset_by_peer = False

    async def encode_headers(self, head: ResponseHead, end_stream: bool, flush: bool) -> None:
        raise NotImplementedError

    async def encode_data(self, data: bytes, end_stream: bool, flush: bool = True) -> None:
        raise NotImplementedError

    async def encode_trailers(self, trailers: HeaderMap) -> None:
        raise NotImplementedError

    async def body_consumed(self, size: int) -> None:
        """Credits `size` forwarded body bytes back to the client."""
        raise NotImplementedError

    async def continue_if_expected(self) -> None:
        """HTTP/2 and HTTP/3 clients do not wait for 100-continue in practice."""

    async def accept_upgrade(self, head: ResponseHead) -> StreamTunnelEndpoint:
        """A 200 accepts the extended CONNECT; DATA then carries the tunnel."""
        accepted = ResponseHead(200, HeaderMap(head.headers))
        strip_hop_by_hop(accepted.headers)  # Upgrade and Connection mean nothing here
        accepted.headers.remove("sec-websocket-accept")  # answers a key never sent
        await self.encode_headers(accepted, end_stream=False, flush=True)
        assert self.active is not None
        return StreamTunnelEndpoint(self, self.active)

    def abort(self) -> None:
        """The stream task resets the stream on its way out (it is not finished)."""

    def close_after_response(self) -> None:
        """A bad stream does not condemn a multiplexed connection: its reset is enough."""


Encoder = TypeVar("Encoder", bound=StreamEncoder)


class StreamTable(Generic[Encoder]):
    """A connection's open request streams, by id."""

    def __init__(
        self,
        callbacks: ConnectionCallbacks,
        conn_info: ConnectionInfo,
        acknowledge: Callable[[int, int], None],
    ) -> None:
        self._callbacks = callbacks
        self._conn_info = conn_info
        #: The codec's credit: (stream id, bytes).
        self._acknowledge = acknowledge
        self.streams: dict[int, Encoder] = {}

    def __len__(self) -> int:
        return len(self.streams)

    def open(
        self,
        encoder: Encoder,
        request: RequestHeaders,
        nursery: trio.Nursery,
        run: Callable[[Encoder, ActiveStream], Awaitable[None]],
    ) -> None:
        """Starts the stream's task, with a body channel if a body follows."""
        body_recv = None
        if not request.end_stream:
            encoder.body, body_recv = trio.open_memory_channel[BodyItem](math.inf)
        active = self._callbacks.new_stream(encoder, request, self._conn_info, body_recv)
        encoder.active = active
        self.streams[request.stream_id] = encoder
        nursery.start_soon(run, encoder, active, name=active.task_name)

    def data(self, event: Data) -> None:
        s = self.streams.get(event.stream_id)
        if s is None or s.body is None:
            # Nobody will read it: credit it now, or the connection window leaks (h2#1210).
            self._acknowledge(event.stream_id, len(event.data))
            return
        s.uncredited += len(event.data)
        s.body.send_nowait(event.data)

    def end(self, event: EndStream) -> None:
        s = self.streams.get(event.stream_id)
        if s is not None and s.body is not None:
            if event.trailers is not None:
                s.body.send_nowait(event.trailers)
            s.body.close()
            s.body = None

    def reset_by_client(self, s: Encoder) -> None:
        """The client reset the stream: nothing more to send on it; its task is cancelled."""
        self._callbacks.stats.downstream_rq_rx_reset.inc()
        s.reset_by_peer = True
        if s.active is not None and s.active.response_state is not ResponseState.DONE:
            s.active.info.add_flag("DR")
        s.scope.cancel()

    def client_gone(self) -> None:
        """The connection ended under its streams: abandon them (flag DC)."""
        for s in self.streams.values():
            if s.active is not None and s.active.response_state is not ResponseState.DONE:
                self._callbacks.stats.downstream_cx_destroy_remote_active_rq.inc()
                s.active.info.add_flag("DC")
                s.reset_by_peer = True  # nobody to send a reset to

    def close(self, s: Encoder) -> bool:
        """The stream's task is over: forget it; whether its response was left unfinished.
        The caller resets it if so, and credits what it never forwarded."""
        del self.streams[s.stream_id]
        active = s.active
        s.active = None  # the stream holds its encoder: no cycle outlives it
        if s.body is not None:
            s.body.close()
        return active is not None and active.response_state is not ResponseState.DONE
