"""The HTTP filter interface, and the chain that runs filters around the router.

A filter is a plain async class, one instance per stream. Because every hook is a coroutine,
Envoy's StopIteration/continueDecoding() dance is just an `await` inside the hook: a filter
that must call out (an auth service, a rate limiter) awaits it and the stream waits with it.
What remains of Envoy's FilterHeadersStatus is one choice: return `None` to continue, or a
`LocalReply` to stop the chain and answer the client directly.

Order: decode hooks run in configured order on the way to the router; encode hooks run in
reverse order on the way back, as in Envoy.
"""

from collections.abc import Callable, Mapping
from typing import Protocol

import attrs

from gateway.clusters.manager import ClusterManager
from gateway.observability.stats import Scope
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import HeaderMap, LocalReply, RequestHead, ResponseHead
from gateway.server.state import ServerState


class HttpFilter:
    """Base class for HTTP filters. Override only the hooks you need; defaults pass through."""

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        """Request head on its way upstream. Return a LocalReply to answer directly."""
        return None

    async def decode_data(self, data: bytes, end_stream: bool) -> bytes:
        """A request body chunk on its way upstream; returns the chunk to forward."""
        return data

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        """Response head on its way downstream; mutate it in place."""

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


#: The hooks a filter may override.
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
    #: For filters that call out to a service of their own (ext_authz).
    clusters: ClusterManager


@attrs.frozen
class HttpFilterType:
    """A registered filter kind: its `type` name, config class, and factory builder."""

    name: str
    config_class: type
    create_factory: Callable[[object, FilterContext], HttpFilterFactory]
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
    )

    def __init__(self, filters: list[HttpFilter]) -> None:
        self._decode_headers = [f for f in filters if overrides(type(f), "decode_headers")]
        self._decode_data = [f for f in filters if overrides(type(f), "decode_data")]
        self._decode_trailers = [f for f in filters if overrides(type(f), "decode_trailers")]
        rev = filters[::-1]
        self._encode_headers = [f for f in rev if overrides(type(f), "encode_headers")]
        self._encode_data = [f for f in rev if overrides(type(f), "encode_data")]
        self._encode_trailers = [f for f in rev if overrides(type(f), "encode_trailers")]
        self._encode_end = [f for f in rev if f in self._encode_data or f in self._encode_trailers]

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
            reply = await f.decode_headers(request, end_stream)
            if reply is not None:
                return reply
        return None

    async def decode_data(self, data: bytes, end_stream: bool) -> bytes:
        for f in self._decode_data:
            data = await f.decode_data(data, end_stream)
        return data

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        for f in self._encode_headers:
            await f.encode_headers(response, end_stream)

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
