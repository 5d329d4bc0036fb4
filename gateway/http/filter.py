"""The HTTP filter interface, and the chain that runs filters around the router.

A filter is a plain async class, one instance per stream. Because every hook is a coroutine,
Envoy's StopIteration/continueDecoding() dance is just an `await` inside the hook: a filter
that must call out (an auth service, a rate limiter) awaits it and the stream waits with it.
What remains of Envoy's FilterHeadersStatus is two choices. On the way up, return `None` to
continue, or a `LocalReply` to stop the chain and answer the client directly. On the way
back, return `None` to continue, or `STOP_ITERATION` to hold the response head until the
response ends, for a filter whose head depends on what comes after it (a transcoded gRPC
call's HTTP status is its grpc-status, which comes in the trailers): an await cannot wait
for the rest of a response that the router is still relaying.

Order: decode hooks run in configured order on the way to the router; encode hooks run in
reverse order on the way back, as in Envoy.
"""

import enum
from collections.abc import Callable, Mapping
from typing import Protocol

import attrs

from gateway.clusters.manager import ClusterManager
from gateway.config.model import GatewayConfig
from gateway.observability.stats import Scope
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import HeaderMap, LocalReply, RequestHead, ResponseHead
from gateway.router.route_table import RouteEntry
from gateway.server.state import ServerState


class FilterHeadersStatus(enum.Enum):
    """What `encode_headers` may return besides None (continue), in Envoy's words."""

    #: Hold the head back: the filters after this one (in encode order) and the client
    #: see it when the response has ended, as the filter has left it, followed by the body
    #: the filter made (see `HttpFilter.encode_headers`).
    STOP_ITERATION = "stop_iteration"


STOP_ITERATION = FilterHeadersStatus.STOP_ITERATION


class DecoderFilterCallbacks(Protocol):
    """What a filter may ask of its stream (Envoy's StreamDecoderFilterCallbacks); given to
    filters that override `HttpFilter.set_decoder_filter_callbacks`."""

    def clear_route_cache(self) -> None:
        """The request was rewritten: the router matches its route again (Envoy's
        clearRouteCache). The stream's filters stay those of the first route."""

    def add_decoded_data(self, data: bytes) -> None:
        """Gives a request that came without a body (`decode_headers` saw end_stream=True)
        the body `data` (Envoy's addDecodedData from decodeHeaders): the filters after this
        one see `end_stream=False` in decode_headers and then `decode_data(data, True)`."""


class HttpFilter:
    """Base class for HTTP filters. Override only the hooks you need; defaults pass through."""

    def set_decoder_filter_callbacks(self, callbacks: DecoderFilterCallbacks) -> None:
        """Called once, before `decode_headers`, only for filters that override it."""

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        """Request head on its way upstream. Return a LocalReply to answer directly."""
        return None

    async def decode_data(self, data: bytes, end_stream: bool) -> bytes:
        """A request body chunk on its way upstream; returns the chunk to forward."""
        return data

    async def encode_headers(
        self, response: ResponseHead, end_stream: bool
    ) -> FilterHeadersStatus | None:
        """Response head on its way downstream; mutate it in place. Return STOP_ITERATION to
        hold it (only a filter that overrides `encode_data` may): the body and trailers then
        pass the filters up to this one, whose data hook's output is kept, and when the
        response ends (the last chunk, or the trailers) the head, as this filter left it,
        goes on with that output as the body. A head with end_stream=True that is held is
        followed at once by `encode_data(b"", True)`, so the filter can give it a body. A
        held head is replaced, and this hook called again, if the response is replaced (a
        retry, or a local reply after an upstream failure)."""
        return None

    async def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        """A response body chunk on its way downstream; returns the chunk to forward."""
        return data

    async def decode_trailers(self, trailers: HeaderMap) -> None:
        """Request trailers (after the last body chunk); mutate them in place."""

    async def encode_trailers(self, trailers: HeaderMap) -> bytes | None:
        """Response trailers (gRPC's status lives here); mutate them in place. Bytes
        returned are sent as the body's last bytes, before the trailers (gRPC-Web carries
        trailers in the body); a filter that empties the trailers ends the body there."""
        return None


#: The coroutine hooks a filter may override (`set_decoder_filter_callbacks` is no hook: it
#: is called once, synchronously).
HOOKS = (
    "decode_headers",
    "decode_data",
    "decode_trailers",
    "encode_headers",
    "encode_data",
    "encode_trailers",
)


class HttpFilterFactory(Protocol):
    """Makes one filter instance per stream (Envoy's FilterFactoryCb)."""

    def __call__(self, info: StreamInfo) -> HttpFilter: ...


@attrs.frozen
class FilterContext:
    """What a filter factory knows besides its config: its `[http_filters.NAME]` name and
    a stats scope of its own (`http.LISTENER.NAME.*`)."""

    name: str
    scope: Scope
    server: ServerState
    #: For filters that call out to a service of their own (ext_authz, ratelimit).
    clusters: ClusterManager
    #: The route whose chain the factory is for, for filter types that are built per
    #: route (`HttpFilterType.per_route`); None: requests that matched no route.
    route: RouteEntry | None = None
    #: This gateway's service cluster (`[dynamic.node] cluster`, Envoy's --service-cluster).
    service_cluster: str = "gateway"


@attrs.frozen
class HttpFilterType:
    """A registered filter kind: its `type` name, config class, and factory builder.

    A `per_route` type reads its route's config (the `ratelimit` filter reads the route's
    `rate_limits`): its factory is built for each route with `FilterContext.route`, and
    may return None to leave the filter out of that route's chain, so routes it has nothing
    to do on pay nothing for it. `check` finds what the config's types cannot (a cluster
    it names that does not exist): errors as (key path in the filter's table, or "" for
    the table itself; what is wrong)."""

    name: str
    config_class: type
    create_factory: Callable[[object, FilterContext], HttpFilterFactory | None]
    per_route: bool = False
    check: Callable[[object, GatewayConfig], list[tuple[str, str]]] | None = None
    #: What each of the counters it makes in its scope means (Prometheus' HELP).
    stats: Mapping[str, str] = attrs.field(factory=dict)


def overrides(cls: type[HttpFilter], hook: str) -> bool:
    return getattr(cls, hook) is not getattr(HttpFilter, hook)


class FilterChain:
    """The filters of one stream. Hooks that a filter leaves at the default are skipped,
    so a chain of header-only filters costs nothing per body chunk."""

    __slots__ = (
        "_decode_data",
        "_decode_headers",
        "_decode_trailers",
        "_encode_data",
        "_encode_end",
        "_encode_headers",
        "_encode_trailers",
        "_filters",
        "added_body",
        "with_callbacks",
    )

    def __init__(self, filters: list[HttpFilter]) -> None:
        self._filters = filters
        self._decode_headers = [f for f in filters if overrides(type(f), "decode_headers")]
        self._decode_data = [f for f in filters if overrides(type(f), "decode_data")]
        self._decode_trailers = [f for f in filters if overrides(type(f), "decode_trailers")]
        rev = filters[::-1]
        self._encode_headers = [f for f in rev if overrides(type(f), "encode_headers")]
        self._encode_data = [f for f in rev if overrides(type(f), "encode_data")]
        self._encode_trailers = [f for f in rev if overrides(type(f), "encode_trailers")]
        self._encode_end = [f for f in rev if f in self._encode_data or f in self._encode_trailers]
        #: The filters to hand their stream's callbacks (few override the method).
        self.with_callbacks = [
            f for f in filters if overrides(type(f), "set_decoder_filter_callbacks")
        ]
        #: A body a filter gave a request that had none: (the filter's position, the body).
        self.added_body: tuple[int, bytes] | None = None

    @property
    def decodes_headers(self) -> bool:
        return bool(self._decode_headers)

    @property
    def transforms_request_body(self) -> bool:
        return bool(self._decode_data)

    @property
    def transforms_response_body(self) -> bool:
        return bool(self._encode_data)

    @property
    def sees_response_end(self) -> bool:
        return bool(self._encode_end)

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        for f in self._decode_headers:
            # A filter before this one may have given the request a body.
            reply = await f.decode_headers(request, end_stream and self.added_body is None)
            if reply is not None:
                return reply
        return None

    def add_decoded_data(self, by: HttpFilter, data: bytes) -> None:
        """`by` gives the request, which came without a body, the body `data`."""
        if self.added_body is not None:
            raise RuntimeError("the request was given a body already")
        self.added_body = (self._filters.index(by), data)

    async def decode_added_body(self) -> bytes:
        """The body a filter added, through the decode_data hooks of the filters after it."""
        assert self.added_body is not None
        position, data = self.added_body
        self.added_body = None
        return await FilterChain(self._filters[position + 1 :]).decode_data(data, True)

    async def decode_data(self, data: bytes, end_stream: bool) -> bytes:
        for f in self._decode_data:
            data = await f.decode_data(data, end_stream)
        return data

    async def encode_headers(
        self, response: ResponseHead, end_stream: bool
    ) -> "tuple[FilterChain, FilterChain] | None":
        """Runs the head through the encode filters. None if it went through them all; if
        a filter holds it (STOP_ITERATION), the chain split at that filter: the filters up
        to it in encode order, which see the body while the head is held, and those after
        it, which see the head when it is let go."""
        for f in self._encode_headers:
            if await f.encode_headers(response, end_stream) is STOP_ITERATION:
                return self.split_at(f)
        return None

    def split_at(self, holder: HttpFilter) -> "tuple[FilterChain, FilterChain]":
        """The chain split at `holder`, which holds the response head (encode_headers)."""
        if holder not in self._encode_data:
            raise TypeError(
                f"{type(holder).__name__} holds the response head without an encode_data "
                "hook to see the body with"
            )
        # Encode order is the reverse of the configured order.
        position = self._filters.index(holder)
        return FilterChain(self._filters[position:]), FilterChain(self._filters[:position])

    async def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        for f in self._encode_data:
            data = await f.encode_data(data, end_stream)
        return data

    async def decode_trailers(self, trailers: HeaderMap) -> None:
        for f in self._decode_trailers:
            await f.decode_trailers(trailers)

    async def end_with_trailers(self, trailers: HeaderMap) -> bytes:
        """The response ends with `trailers`: each filter, in encode order, sees the end
        of the body (with the last bytes the filters before it made) and then the
        trailers. Returns the body's last bytes."""
        tail = b""
        for f in self._encode_end:
            if f in self._encode_data:
                tail = await f.encode_data(tail, True)
            if f in self._encode_trailers:
                tail += await f.encode_trailers(trailers) or b""
        return tail


#: The chain of a stream without filters: shared, as a chain never changes once built.
NO_FILTERS = FilterChain([])
