"""The seam between the connection manager and its connections, one per codec (Envoy's
`ServerConnection` and `ServerConnectionCallbacks`, envoy/http/codec.h).

The HCM drives a connection through `DownstreamConnection`; a connection calls back
through `ConnectionCallbacks`: the listener's HTTP settings, the stats it counts in, the
drain state, and the three steps of each request's life (a new stream, its task, its end).
Connections hold these callbacks, not the manager, so they need not import it, and
whatever else the manager holds (route tables, filter factories, access logs) stays out of
their reach.
"""

from typing import Protocol

import trio

from gateway.config.model import HttpConnectionManagerConfig
from gateway.http.active_stream import ActiveStream, BodyItem, ResponseEncoder
from gateway.http.hcm_stats import HcmStats
from gateway.listeners.network_filter import ConnectionInfo
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.events import RequestHeaders
from gateway.server.overload import OverloadActionState


class DownstreamConnection(Protocol):
    async def run(self) -> None: ...

    def drain(self) -> None:
        """Stop taking new requests (HTTP/1.1: close when idle; HTTP/2: GOAWAY)."""

    def task_fields(self) -> dict[str, object]: ...


class ConnectionCallbacks(Protocol):
    """What a downstream connection needs of its connection manager."""

    @property
    def config(self) -> HttpConnectionManagerConfig: ...

    @property
    def stats(self) -> HcmStats: ...

    @property
    def draining(self) -> bool:
        """Responses carry `Connection: close` (HTTP/2: the connection sends GOAWAY)."""

    @property
    def drain_grace(self) -> float: ...

    @property
    def drain_grace_deadline(self) -> float:
        """Until when a draining connection still takes requests on their way (inf: not
        draining)."""

    @property
    def disable_http_keepalive(self) -> OverloadActionState: ...

    def new_stream(
        self,
        encoder: ResponseEncoder,
        event: RequestHeaders,
        conn_info: ConnectionInfo,
        body: trio.MemoryReceiveChannel[BodyItem] | None,
    ) -> ActiveStream:
        """An ActiveStream for a request head, with `encoder` as its downstream side."""

    async def run_stream(self, stream: ActiveStream, scope: trio.CancelScope) -> None:
        """The body of the stream's task; `scope` is the connection's handle on it."""

    def finish(self, info: StreamInfo) -> None:
        """A request is over (a stream, or a reply to a head that never became one):
        stats and access logs."""
