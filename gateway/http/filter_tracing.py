"""A traced request's filter chain: the filters that took time get a span each.

The rule: a filter's `decode_headers` or `encode_headers` hook gets a child span of the
request's SERVER span, named `filter NAME` (its `[http_filters.NAME]`), when it took at
least 100 µs, or when it answered the request itself (a LocalReply: the span carries the
status). 100 µs is about a third of what the gateway spends on a whole proxied request: a
filter past it called out (ext_authz, jwt_authn fetching keys), waited (fault's delay) or
did real work, which is what a trace is read for; header-only filters take a few
microseconds, and a span for each would bury the slow one. Body and trailer hooks run per
chunk and get no span of their own.

Only a sampled request's stream builds this chain (ActiveStream); the others build the
plain FilterChain and pay nothing.
"""

from collections.abc import Coroutine
from typing import Any, TypeVar

from gateway.http.filter import STOP_ITERATION, FilterChain, HttpFilter
from gateway.observability.tracing.span import Span, now_ns
from gateway.protocol.headers import LocalReply, RequestHead, ResponseHead

T = TypeVar("T")

#: A hook that took at least this long (ns) gets a span.
MIN_FILTER_SPAN_NS = 100_000


class TracedFilterChain(FilterChain):
    __slots__ = ("_names", "_span")

    def __init__(self, filters: list[HttpFilter], names: list[str], span: Span) -> None:
        super().__init__(filters)
        self._names = {id(f): name for f, name in zip(filters, names, strict=True)}
        self._span = span

    # The two hooks as FilterChain runs them, each call timed.

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        for f in self._decode_headers:
            call = f.decode_headers(request, end_stream and self.added_body is None)
            reply = await self._timed(f, "decode_headers", call)
            if reply is not None:
                return reply
        return None

    async def encode_headers(
        self, response: ResponseHead, end_stream: bool
    ) -> tuple[FilterChain, FilterChain] | None:
        for f in self._encode_headers:
            call = f.encode_headers(response, end_stream)
            if await self._timed(f, "encode_headers", call) is STOP_ITERATION:
                return self.split_at(f)
        return None

    async def _timed(self, f: HttpFilter, hook: str, call: Coroutine[Any, Any, T]) -> T:
        start = now_ns()
        try:
            result = await call
        except BaseException as exc:  # a hook cut short (the route timeout) shows too
            self._record(f, hook, start, None, exc)
            raise
        self._record(f, hook, start, result, None)
        return result

    def _record(
        self, f: HttpFilter, hook: str, start: int, result: object, error: BaseException | None
    ) -> None:
        end = now_ns()
        reply = result if isinstance(result, LocalReply) else None
        if end - start < MIN_FILTER_SPAN_NS and reply is None:
            return
        span = self._span.child(f"filter {self._names[id(f)]}", start_ns=start)
        span.attributes["gateway.filter.hook"] = hook
        if reply is not None:
            span.attributes["http.response.status_code"] = reply.status
        if error is not None:
            span.fail(type(error).__name__)
        span.end(end)
