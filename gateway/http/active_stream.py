"""One request/response exchange on a downstream connection: Envoy's ActiveStream.

The stream runs in its own task ("stream 3 GET /api"), whatever the codec. It owns the
request head, the per-stream filter instances, the StreamInfo, and two directions of body
flow:

* request body: items arrive on a channel filled by the connection's reader, pass through
  the decode filters, and are pulled by the router only as fast as the upstream takes them.
  Each chunk is credited back to the codec (`ResponseEncoder.body_consumed`) when the router
  asks for the next one, i.e. once it was forwarded: HTTP/2 turns that into WINDOW_UPDATE,
  so a slow upstream slows the client instead of filling memory; HTTP/1.1 relies on TCP.
* response: the router pushes the head, chunks and trailers through the encode filters to
  the stream's `ResponseEncoder`, which is the HTTP/1.1 connection or one HTTP/2 stream.
  A filter may hold the head back (STOP_ITERATION) until the response ends: the stream
  then keeps what the filters up to it make of the body, and sends head and body through
  the filters after it when the response is complete (`_HeldResponse`).

Any GatewayError becomes a local reply if no response byte was sent yet (a gRPC status for
gRPC requests); after that the only honest answer is to reset the stream (HTTP/2) or cut the
connection (HTTP/1.1), so the client never mistakes a truncated body for a whole one.
"""

import enum
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

from gateway.errors import (
    DownstreamDisconnect,
    DownstreamProtocolError,
    GatewayError,
    Overloaded,
    StreamCancelled,
    UpstreamTimeout,
)
from gateway.http.filter import NO_FILTERS, FilterChain, HttpFilter, HttpFilterFactory
from gateway.http.filter_tracing import TracedFilterChain
from gateway.http.hcm_stats import HcmStats
from gateway.io.tunnel import TunnelEndpoint
from gateway.observability.access_log_format import escape
from gateway.observability.stream_info import StreamInfo
from gateway.protocol import grpc
from gateway.protocol.headers import (
    HeaderMap,
    LocalReply,
    RequestHead,
    ResponseHead,
    http_date,
    strip_trailer_fields,
)
from gateway.router.route_table import RouteEntry, RouteTable
from gateway.server.overload import OverloadActionState

log = logging.getLogger("gateway.http")


class ResponseState(enum.Enum):
    """The downstream response side, as mitmproxy's HttpStream keeps its server_state."""

    WAITING = "waiting"
    STREAMING = "streaming body"
    DONE = "done"
    ABORTED = "aborted"


#: What the request-body channel carries: chunks, trailers (a HeaderMap, always last), or
#: the parse error that ended the body.
BodyItem = bytes | HeaderMap | DownstreamProtocolError


class ResponseEncoder(Protocol):
    """The downstream side of one stream, as the codec provides it (Envoy's ResponseEncoder)."""

    async def continue_if_expected(self) -> None: ...

    async def encode_headers(self, head: ResponseHead, end_stream: bool, flush: bool) -> None: ...

    async def encode_data(self, data: bytes, end_stream: bool, flush: bool = True) -> None:
        """With flush=False (never with end_stream) the bytes may wait for what the stream
        sends next, as encode_headers' do."""

    async def encode_trailers(self, trailers: HeaderMap) -> None: ...

    async def accept_upgrade(self, head: ResponseHead) -> TunnelEndpoint:
        """Tells the client its upgrade was accepted (HTTP/1.1: 101; HTTP/2: 200) and
        returns the downstream end of the tunnel."""
        ...

    async def body_consumed(self, size: int) -> None:
        """`size` request body bytes were forwarded: the peer may send that much more."""

    def abort(self) -> None:
        """Gives up on the response mid-way (HTTP/2 RST_STREAM, HTTP/1.1 close)."""

    def close_after_response(self) -> None: ...


class StreamCallbacks(Protocol):
    """What a stream needs of its connection manager: the route table and the filters for
    its request, the overload action that refuses requests, and the stats it counts in."""

    @property
    def route_table(self) -> RouteTable: ...

    def filters_for(self, route: RouteEntry | None) -> list[HttpFilterFactory]: ...

    def filter_names_for(self, route: RouteEntry | None) -> list[str]: ...

    @property
    def stop_accepting_requests(self) -> OverloadActionState: ...

    @property
    def stats(self) -> HcmStats: ...

    @property
    def alt_svc(self) -> str | None:
        """An `alt-svc` header value every response carries (HTTP/3 advertised)."""


@attrs.define
class _HeldResponse:
    """A response head a filter holds (STOP_ITERATION), with the filters up to that one
    (in encode order), which see the body meanwhile, and what they made of it."""

    head: ResponseHead
    through: FilterChain
    #: The filters after the holder: the response's chain once the head is let go.
    rest: FilterChain
    body: bytearray = attrs.Factory(bytearray)


class _FilterCallbacks:
    """One filter's way to its stream (Envoy's StreamDecoderFilterCallbacks)."""

    __slots__ = ("_filter", "_stream")

    def __init__(self, stream: "ActiveStream", for_filter: HttpFilter) -> None:
        self._stream = stream
        self._filter = for_filter

    def clear_route_cache(self) -> None:
        self._stream.clear_route_cache()

    def add_decoded_data(self, data: bytes) -> None:
        if self._stream.has_request_body:
            raise RuntimeError("add_decoded_data is for a request that came without a body")
        self._stream.filters.add_decoded_data(self._filter, data)


class ActiveStream:
    def __init__(
        self,
        callbacks: StreamCallbacks,
        encoder: ResponseEncoder,
        request: RequestHead,
        info: StreamInfo,
        body: trio.MemoryReceiveChannel[BodyItem] | None,
    ) -> None:
        self.callbacks = callbacks
        self.encoder = encoder
        self.request = request
        self.info = info
        info.request_head = request
        #: Built once the route is known (routes may disable or reconfigure filters).
        self.filters = NO_FILTERS
        #: The filters the response goes through: `filters`, or once a filter let go of
        #: the head it held, those after that filter.
        self._encoding = NO_FILTERS
        self._held: _HeldResponse | None = None
        self._body = body
        self._unacked = 0
        self.request_trailers: HeaderMap | None = None
        self.response_state = ResponseState.WAITING
        self.is_grpc = grpc.is_grpc_request(request)
        self._route: RouteEntry | bool | None = False
        #: The connection manager's answer before any filter runs (a path it refused).
        self.early_reply: LocalReply | None = None
        #: The stream's cancel scope while `stream_idle_timeout` runs: each byte moved
        #: either way pushes its deadline on.
        self._idle_scope: trio.CancelScope | None = None
        self._idle_timeout = 0.0
        #: A response write was interrupted (the route timeout, a failure): some of the
        #: bytes may not have left, so nothing but the stream's end may follow them.
        self._write_cut = False

    def __repr__(self) -> str:
        return (
            f"<ActiveStream {self.info.stream_id} {self.request.method} {self.request.path} "
            f"response={self.response_state.value} state={self.info.state!r}>"
        )

    @property
    def task_name(self) -> str:
        return f"stream {self.info.stream_id} {self.request.method} {self.request.path[:80]}"

    # -- routing -------------------------------------------------------------------------

    @property
    def route(self) -> RouteEntry | None:
        """The matched route, computed on first use and cached (Envoy's route cache)."""
        if self._route is False:
            self._route = self.callbacks.route_table.route(self.request)
            if self._route is not None:
                self.info.route_name = self._route.name
                # Chosen with the route, as Envoy's route cache does, so the filters know
                # it too (grpc_stats counts into it, also for their own local replies),
                # and the router forwards to it.
                self.info.cluster_name = self._route.choose_cluster() or "-"
        assert not isinstance(self._route, bool)
        return self._route

    def clear_route_cache(self) -> None:
        """A filter rewrote the request: its route is matched again when next asked for."""
        self._route = False
        self.info.route_name = "-"

    # -- stream idle timeout -------------------------------------------------------------

    def watch_idle(self, scope: trio.CancelScope, timeout: float) -> None:
        """Ends the stream (`scope` is cancelled) after `timeout` with no bytes either way."""
        self._idle_scope, self._idle_timeout = scope, timeout
        scope.deadline = trio.current_time() + timeout

    def stop_watching_idle(self) -> None:
        """A tunnel keeps its own idle timeout."""
        if self._idle_scope is not None:
            self._idle_scope.deadline = math.inf
            self._idle_scope = None

    def _active(self) -> None:
        scope = self._idle_scope
        if scope is not None:
            # Moved only by more than 1/16 of the timeout: a short request, whose bytes all
            # move at once, moves it never (each move costs trio a deadline update).
            deadline = trio.current_time() + self._idle_timeout
            if deadline - scope.deadline > self._idle_timeout / 16:
                scope.deadline = deadline

    # -- request body --------------------------------------------------------------------

    @property
    def has_request_body(self) -> bool:
        return self._body is not None or self.filters.added_body is not None

    def body_ready(self) -> bool:
        """Whether `receive_body()` would return without waiting for the client."""
        body = self._body
        if body is None:
            return True
        state = body.statistics()
        return state.current_buffer_used > 0 or state.open_send_channels == 0

    async def receive_body(self) -> bytes | None:
        """The next request body chunk after the decode filters; None once it is complete
        (trailers, if any, are then in `request_trailers`)."""
        if self._unacked:
            await self.encoder.body_consumed(self._unacked)
            self._unacked = 0
        if self._body is None:
            if self.filters.added_body is not None:
                return await self.filters.decode_added_body()
            return None
        await self.encoder.continue_if_expected()
        try:
            item = await self._body.receive()
        except trio.EndOfChannel:
            item = None
        if isinstance(item, DownstreamProtocolError):
            try:
                raise item
            finally:
                del item  # its traceback holds this frame: a local naming it is a cycle
        if isinstance(item, HeaderMap):
            strip_trailer_fields(item)
            if not item:
                item = None  # nothing left that may be a trailer: the body simply ends
        if item is None or isinstance(item, HeaderMap):
            if item is not None:
                await self.filters.decode_trailers(item)
            self.request_trailers = item
            self._body = None
            if self.filters.transforms_request_body:
                return await self.filters.decode_data(b"", True) or None
            return None
        self._unacked = len(item)
        self.info.bytes_received += len(item)
        self._active()
        if self.filters.transforms_request_body:
            item = await self.filters.decode_data(item, False)
        return item

    # -- response ------------------------------------------------------------------------

    @property
    def response_started(self) -> bool:
        return self.response_state is not ResponseState.WAITING

    async def encode_headers(
        self, head: ResponseHead, end_stream: bool, flush: bool = True
    ) -> None:
        """Sends the response head through the encode filters. With flush=False the bytes
        wait for the first body chunk, so a small response leaves in one write."""
        if self._held is not None:
            # A new response (a retry's, a local reply) replaces the one held: every
            # filter sees it from the start.
            self._held = None
            self._encoding = self.filters
        split = await self._encoding.encode_headers(head, end_stream)
        if split is not None:
            self._held = _HeldResponse(head, *split)
            self.info.state = "response head held by a filter"
            if end_stream:  # the filter may give the response a body
                await self._encode_held_data(b"", True)
            return
        if "date" not in head.headers:  # RFC 9110 6.6.1: an origin server with a clock
            head.headers.add("date", http_date())
        alt_svc = self.callbacks.alt_svc
        if alt_svc is not None and self.request.http_version != "3":
            head.headers.set("alt-svc", alt_svc)
        self.info.response_code = head.status
        self.info.response_head = head
        self.response_state = ResponseState.DONE if end_stream else ResponseState.STREAMING
        self.info.state = "sending response"
        try:
            await self.encoder.encode_headers(head, end_stream, flush)
        except BaseException:
            self._write_cut = True
            raise
        self._active()

    async def encode_data(self, data: bytes, end_stream: bool, flush: bool = True) -> None:
        if self._encoding.transforms_response_body:
            # Only a filter with a data hook may hold the head: no check on a chain without.
            if self._held is not None:
                await self._encode_held_data(data, end_stream)
                return
            data = await self._encoding.encode_data(data, end_stream)
        self.info.bytes_sent += len(data)
        if end_stream:
            self.response_state = ResponseState.DONE
        try:
            await self.encoder.encode_data(data, end_stream, flush)
        except BaseException:
            self._write_cut = True
            raise
        self._active()

    async def encode_trailers(self, trailers: HeaderMap, only_in_body: bool = False) -> None:
        """Ends the response with trailers (gRPC's status lives here); those that may not
        be trailers are dropped first, and with none left the body simply ends. With
        `only_in_body`, trailers that no filter took into the body cut the stream instead
        of being sent."""
        strip_trailer_fields(trailers)
        if not trailers:
            await self.encode_data(b"", end_stream=True)
            return
        self.info.response_trailers = trailers
        tail = b""
        if self._encoding.sees_response_end:
            if self._held is not None:
                held = self._held
                held.body += await held.through.end_with_trailers(trailers)
                await self._release(trailers or None)
                return
            tail = await self._encoding.end_with_trailers(trailers)
            self.info.bytes_sent += len(tail)
        if trailers and only_in_body:
            self._abort()
            return
        self.response_state = ResponseState.DONE
        if not trailers:  # a filter took them into the body (gRPC-Web)
            await self.encoder.encode_data(tail, True)
            return
        if tail:
            await self.encoder.encode_data(tail, False, flush=False)
        await self.encoder.encode_trailers(trailers)

    async def _encode_held_data(self, data: bytes, end_stream: bool) -> None:
        held = self._held
        assert held is not None
        held.body += await held.through.encode_data(data, end_stream)
        self._active()
        if end_stream:
            await self._release(None)

    async def _release(self, trailers: HeaderMap | None) -> None:
        """The response has ended: the held head goes on, as its filter left it, through
        the filters after that one, then what the filters up to it made of the body, then
        the trailers they left."""
        held, self._held = self._held, None
        assert held is not None
        self._encoding = held.rest
        body = bytes(held.body)
        ends = trailers is None
        await self.encode_headers(held.head, end_stream=ends and not body, flush=not body)
        if body:  # with trailers to come, the body waits for them: one write
            await self.encode_data(body, end_stream=ends, flush=ends)
        if trailers is not None:
            await self.encode_trailers(trailers)

    async def accept_upgrade(self, head: ResponseHead) -> TunnelEndpoint:
        """Tells the client its upgrade (or CONNECT) was accepted with `head`; the rest of
        the response is the tunnel, whose downstream end this returns."""
        endpoint = await self.encoder.accept_upgrade(head)
        self.response_state = ResponseState.STREAMING
        return endpoint

    def end_tunnel(self, cut: bool) -> None:
        """The tunnel is over. A cut one ends as a response given up mid-way (HTTP/2:
        RST_STREAM; HTTP/1.1: the connection closes)."""
        if cut:
            self._abort()
        else:
            self.response_state = ResponseState.DONE

    async def send_local_reply(self, reply: LocalReply) -> None:
        self.info.add_flag(reply.response_flag)
        if self.is_grpc:
            # gRPC clients read errors from grpc-status, not from the HTTP status: answer
            # with a trailers-only response.
            head = ResponseHead(
                200, grpc.trailers_only(reply.status, reply.body, reply.grpc_status)
            )
            head.headers.apply(reply.headers, ())
            await self.encode_headers(head, end_stream=True)
            return
        body = reply.body.encode()
        headers = HeaderMap(reply.headers.items())
        if body and "content-type" not in headers:
            headers.set("content-type", "text/plain")
        headers.set("content-length", str(len(body)))
        head = ResponseHead(reply.status, headers)
        await self.encode_headers(head, end_stream=not body, flush=not body)
        if body:
            await self.encode_data(body, end_stream=True)

    # -- the stream task -----------------------------------------------------------------

    async def run(self, router: "RouterFn") -> None:
        """Runs filters and router; whatever fails, it costs this stream only."""
        try:
            await self._run(router)
        except DownstreamDisconnect:
            self.info.add_flag("DC")
            self.response_state = ResponseState.ABORTED

    async def _run(self, router: "RouterFn") -> None:
        try:
            if self.callbacks.stop_accepting_requests.active:
                # Before routing and filters, as Envoy: under memory pressure, allocate
                # nothing more for the request.
                self.callbacks.stats.downstream_rq_overload_close.inc()
                raise Overloaded()
            if self.early_reply is not None:
                await self.send_local_reply(self.early_reply)
                return
            # The route timeout also bounds the decode filters (one may await an outside
            # service); the router then starts its own for the upstream exchange.
            route = self.route
            factories = self.callbacks.filters_for(route)
            if factories:
                filters = [f(self.info) for f in factories]
                span = self.info.span
                self.filters = self._encoding = (
                    FilterChain(filters)
                    if span is None
                    else TracedFilterChain(filters, self.callbacks.filter_names_for(route), span)
                )
                for f in self.filters.with_callbacks:
                    f.set_decoder_filter_callbacks(_FilterCallbacks(self, f))
            reply = None
            if self.filters.decodes_headers:  # no cancel scope on the hot path otherwise
                timeout = (
                    route.config.timeout if route is not None and route.config.timeout else math.inf
                )
                self.info.state = "in decode filters"
                with trio.move_on_after(timeout) as filters_scope:
                    reply = await self.filters.decode_headers(
                        self.request, not self.has_request_body
                    )
                if filters_scope.cancelled_caught:
                    raise UpstreamTimeout()
                # A filter may have made the request gRPC (grpc_web bridges gRPC-Web to
                # it): from here on, the router's deadlines and retries and the gateway's
                # own replies go by the request that goes upstream.
                self.is_grpc = grpc.is_grpc_request(self.request)
            if reply is not None:
                await self.send_local_reply(reply)
            else:
                await router(self)
        except GatewayError as exc:
            await self.fail(exc)
        except DownstreamDisconnect:
            raise
        except Exception:
            # A bug in a filter or in the gateway must cost one request, not the connection's
            # other work or the listener.
            log.exception(
                "stream %s %s %s failed",
                self.info.stream_id,
                escape(self.request.method),
                escape(self.request.path),
            )
            if self.response_started:
                self._abort()
            else:
                await self.send_local_reply(LocalReply(500, "internal error"))

    async def fail(self, exc: GatewayError) -> None:
        """Ends the stream with `exc`'s local reply, or cuts it if the response had begun."""
        self.info.add_flag(exc.response_flag)
        if isinstance(exc, DownstreamProtocolError | StreamCancelled):
            self.encoder.close_after_response()
        if self.response_state is ResponseState.STREAMING and self.is_grpc and not self._write_cut:
            # A gRPC server ends a failed stream with its status in trailers; a reset reads
            # as CANCELLED, "you cancelled", to the client. Say what happened instead:
            # UNAVAILABLE (upstream gone) or DEADLINE_EXCEEDED (route timeout). Over
            # HTTP/1.1 a body without them would end as if complete, so there the stream
            # is cut, unless a filter carries them in the body (grpc_web); and so it is
            # after a write cut short, whose missing bytes the client would misread.
            trailers = grpc.trailers_only(exc.status, exc.body)
            trailers.remove("content-type")
            await self.encode_trailers(trailers, only_in_body=not self.request.multiplexed)
        elif self.response_started:
            self._abort()
        else:
            await self.send_local_reply(LocalReply(exc.status, exc.body, {}, exc.response_flag))

    def _abort(self) -> None:
        self.response_state = ResponseState.ABORTED
        self.encoder.abort()


#: The terminal filter: called with the stream once the decode filters have run.
RouterFn = Callable[[ActiveStream], Awaitable[None]]
