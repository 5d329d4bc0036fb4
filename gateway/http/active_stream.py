"""One request/response exchange on a downstream connection: Envoy's ActiveStream.

The stream runs in its own task ("stream 3 GET /api"). It owns the request head, the
per-stream filter instances, the StreamInfo, and two directions of body flow:

* request body: chunks arrive on a bounded channel filled by the connection's reader task,
  pass through the decode filters, and are pulled by the router as fast as the upstream
  takes them, so a slow upstream slows the client (TCP backpressure), never fills memory.
* response: the router pushes the head and chunks through the encode filters to the
  connection's codec and socket.

Any GatewayError becomes a local reply if no response byte was sent yet; after that the
only honest answer is to cut the downstream connection so the client sees a truncated body.
"""

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from gateway.errors import DownstreamDisconnect, DownstreamProtocolError, GatewayError
from gateway.http.filter import FilterChain, LocalReply
from gateway.http.headers import HeaderMap, RequestHead, ResponseHead
from gateway.http.route_table import RouteEntry
from gateway.http.stream_info import StreamInfo

if TYPE_CHECKING:
    from gateway.http.conn_manager import Http1Connection


class ResponseState(enum.Enum):
    """The downstream response side, as mitmproxy's HttpStream keeps its server_state."""

    WAITING = "waiting"
    STREAMING = "streaming body"
    DONE = "done"
    ABORTED = "aborted"


log = logging.getLogger("gateway.http")

#: What the request-body channel carries: chunks, or the parse error that ended the body.
BodyItem = bytes | DownstreamProtocolError


class ActiveStream:
    def __init__(
        self,
        connection: "Http1Connection",
        request: RequestHead,
        info: StreamInfo,
        filters: FilterChain,
        body: trio.MemoryReceiveChannel[BodyItem] | None,
    ) -> None:
        self.connection = connection
        self.request = request
        self.info = info
        self.filters = filters
        self._body = body
        self.response_state = ResponseState.WAITING
        self._route: RouteEntry | bool | None = False

    def __repr__(self) -> str:
        return (
            f"<ActiveStream {self.info.stream_id} {self.request.method} {self.request.path} "
            f"response={self.response_state.value} state={self.info.state!r}>"
        )

    # -- routing -------------------------------------------------------------------------

    @property
    def route(self) -> RouteEntry | None:
        """The matched route, computed on first use and cached (Envoy's route cache)."""
        if self._route is False:
            self._route = self.connection.manager.route_table.route(self.request)
            if self._route is not None:
                self.info.route_name = self._route.name
        assert not isinstance(self._route, bool)
        return self._route

    def clear_route_cache(self) -> None:
        """Call after changing what routing looks at, so the route is matched again."""
        self._route = False

    # -- request body --------------------------------------------------------------------

    @property
    def has_request_body(self) -> bool:
        return self._body is not None

    async def receive_body(self) -> bytes | None:
        """The next request body chunk after the decode filters; None once it is complete."""
        if self._body is None:
            return None
        await self.connection.continue_if_expected()
        try:
            item = await self._body.receive()
        except trio.EndOfChannel:
            self._body = None
            if self.filters.transforms_request_body:
                return await self.filters.decode_data(b"", True) or None
            return None
        if isinstance(item, DownstreamProtocolError):
            raise item
        self.info.bytes_received += len(item)
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
        await self.filters.encode_headers(head, end_stream)
        self.info.response_code = head.status
        self.response_state = ResponseState.DONE if end_stream else ResponseState.STREAMING
        self.info.state = "sending response"
        await self.connection.send_response_head(head, end_stream, flush)

    async def encode_data(self, data: bytes, end_stream: bool) -> None:
        if self.filters.transforms_response_body:
            data = await self.filters.encode_data(data, end_stream)
        self.info.bytes_sent += len(data)
        if end_stream:
            self.response_state = ResponseState.DONE
        await self.connection.send_response_data(data, end_stream)

    async def send_local_reply(self, reply: LocalReply) -> None:
        self.info.add_flag(reply.response_flag)
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
        try:
            reply = await self.filters.decode_headers(self.request, not self.has_request_body)
            if reply is not None:
                await self.send_local_reply(reply)
            else:
                await router(self)
        except GatewayError as exc:
            self._fail(exc)
            if self.response_started:
                # Mid-response: all a proxy can do is cut the connection (a truncated body).
                self.response_state = ResponseState.ABORTED
                self.connection.abort()
            else:
                await self.send_local_reply(LocalReply(exc.status, exc.body, {}, exc.response_flag))
        except DownstreamDisconnect:
            self.info.add_flag("DC")
            self.response_state = ResponseState.ABORTED
        except Exception:
            # A bug in a filter or in the gateway must cost one request, not the connection's
            # other work or the listener.
            log.exception(
                "stream %s %s %s failed",
                self.info.stream_id,
                self.request.method,
                self.request.path,
            )
            if self.response_started:
                self.response_state = ResponseState.ABORTED
                self.connection.abort()
            else:
                await self.send_local_reply(LocalReply(500, "internal error"))

    def _fail(self, exc: GatewayError) -> None:
        self.info.add_flag(exc.response_flag)
        if isinstance(exc, DownstreamProtocolError):
            self.connection.close_after_response()


#: The terminal filter: called with the stream once the decode filters have run.
RouterFn = Callable[[ActiveStream], Awaitable[None]]
