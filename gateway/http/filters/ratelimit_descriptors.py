"""What a route's `rate_limits` make of a request: the descriptors the `ratelimit` filter
asks the rate limit service about (Envoy's RateLimitPolicy and its actions). Pure.

A route's rate limits apply, or its virtual host's when it has none (Envoy's default,
OVERRIDE), those of the filter's `stage` only. Each rate limit makes one descriptor, its
actions' entries in order, unless an action cannot make its entry (a header that is
absent, a header_value_match that does not match): then that descriptor is left out,
and the others are still sent. Compiled once per route, when its filter chain is built.
"""

from collections.abc import Callable

from gateway.config.model import HeaderMatcher, RateLimit, RateLimitAction
from gateway.config.regex import compile_optional
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import RequestHead
from gateway.router.route_table import RouteEntry, header_matches

#: A descriptor entry: (key, value).
Entry = tuple[str, str]
#: An action: its entry, () to add none and go on (`skip_if_absent`), or None when the
#: descriptor cannot be made.
_Action = Callable[[RequestHead, StreamInfo], tuple[Entry, ...] | None]


def _request_headers(name: str, key: str, skip_if_absent: bool) -> _Action:
    name = name.lower()

    def action(request: RequestHead, info: StreamInfo) -> tuple[Entry, ...] | None:
        value = request.headers.get(name)
        if value is None:
            return () if skip_if_absent else None
        return ((key, value),)

    return action


def _header_value_match(matchers: list[HeaderMatcher], entry: Entry, expect_match: bool) -> _Action:
    compiled = [(m, compile_optional(m.regex)) for m in matchers]

    def action(request: RequestHead, info: StreamInfo) -> tuple[Entry, ...] | None:
        matched = all(header_matches(m, regex, request) for m, regex in compiled)
        return (entry,) if matched == expect_match else None

    return action


def _fixed(entry: Entry | None) -> _Action:
    """An entry that does not depend on the request (None: never a descriptor)."""
    result = (entry,) if entry is not None else None
    return lambda request, info: result


def _remote_address(request: RequestHead, info: StreamInfo) -> tuple[Entry, ...] | None:
    return (("remote_address", info.downstream_ip),)


def _compile(action: RateLimitAction, route_cluster: str | None, service_cluster: str) -> _Action:
    if (headers := action.request_headers) is not None:
        return _request_headers(headers.header_name, headers.descriptor_key, headers.skip_if_absent)
    if action.remote_address is not None:
        return _remote_address
    if (generic := action.generic_key) is not None:
        return _fixed((generic.descriptor_key, generic.descriptor_value))
    if (match := action.header_value_match) is not None:
        entry = (match.descriptor_key, match.descriptor_value)
        return _header_value_match(match.headers, entry, match.expect_match)
    if action.destination_cluster is not None:
        # A route of weighted clusters picks its cluster in the router, after the filters:
        # no entry can name it here, so its descriptor is left out.
        return _fixed(("destination_cluster", route_cluster) if route_cluster else None)
    assert action.source_cluster is not None, "validated: one kind per action"
    return _fixed(("source_cluster", service_cluster))


class RateLimitPolicy:
    """The rate limits of one route for one filter stage, compiled."""

    __slots__ = ("_limits",)

    def __init__(
        self, limits: list[RateLimit], route_cluster: str | None, service_cluster: str
    ) -> None:
        self._limits = [
            [_compile(action, route_cluster, service_cluster) for action in limit.actions]
            for limit in limits
        ]

    @classmethod
    def for_route(cls, route: RouteEntry, stage: int, service_cluster: str) -> "RateLimitPolicy":
        limits = route.config.rate_limits or route.virtual_host.rate_limits
        return cls(
            [limit for limit in limits if limit.stage == stage],
            route.config.cluster,
            service_cluster,
        )

    def __bool__(self) -> bool:
        return bool(self._limits)

    def descriptors(self, request: RequestHead, info: StreamInfo) -> list[tuple[Entry, ...]]:
        found = []
        for actions in self._limits:
            descriptor: tuple[Entry, ...] = ()
            for action in actions:
                entries = action(request, info)
                if entries is None:
                    break
                descriptor += entries
            else:
                if descriptor:
                    found.append(descriptor)
        return found
