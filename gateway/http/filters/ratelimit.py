"""`ratelimit`: global rate limiting against a rate limit service (Envoy's
envoy.filters.http.ratelimit, speaking envoy.service.ratelimit.v3 as envoyproxy/ratelimit
does).

```toml
[http_filters.global_rate]
type = "ratelimit"
domain = "edge"
rate_limit_service = { cluster = "ratelimit", timeout = "50ms" }
failure_mode_deny = false
enable_x_ratelimit_headers = "DRAFT_VERSION_03"
```

Routes (or their virtual hosts) say what to ask about with `rate_limits` (descriptors,
ratelimit_descriptors.py). The filter is built per route, and left out of the chains of
routes with no rate limits for its stage: they pay nothing for it. For the others it
calls RateLimitService/ShouldRateLimit with the request's descriptors over the gateway's
own HTTP/2 client, in the stream's task (a client that leaves cancels the call; the route
timeout bounds it; /tasks shows the stream waiting). OVER_LIMIT: 429 with flag RL and
`x-envoy-ratelimited` (a gRPC client gets UNAVAILABLE, as Envoy maps 429). A service that
fails or is slower than its timeout lets the request through, or with `failure_mode_deny`
answers 500 with flag RLSE. Stats: `cluster.ROUTE_CLUSTER.ratelimit.*`, as Envoy.
"""

import logging
from typing import Literal

import attrs
import trio
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2

from gateway.clusters.grpc_client import call_unary
from gateway.config.model import (
    MAX_RATE_LIMIT_STAGE,
    GatewayConfig,
    GrpcService,
    between,
)
from gateway.config.validate import check_grpc_service
from gateway.errors import GatewayError
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.http.filters.authz_verdict import service_may_set
from gateway.http.filters.ratelimit_descriptors import Entry, RateLimitPolicy
from gateway.observability.stats import Counter, create_stats, describe
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.grpc import Status, is_grpc_request
from gateway.protocol.headers import LocalReply, RequestHead, ResponseHead

log = logging.getLogger("gateway.http")

METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
#: Envoy's default for the call.
DEFAULT_TIMEOUT = 0.02
#: A RateLimitResponse larger than this is a failed call (statuses, headers, a body).
MAX_RESPONSE = 64 * 1024

_Response = rls_pb2.RateLimitResponse
#: A limit's unit as the window of x-ratelimit-limit's quota policy, in seconds (the
#: units Envoy gives a window; others give none).
_WINDOWS = {
    _Response.RateLimit.SECOND: 1,
    _Response.RateLimit.MINUTE: 60,
    _Response.RateLimit.HOUR: 3600,
    _Response.RateLimit.DAY: 86400,
}


@attrs.frozen
class RateLimitConfig:
    #: The domain the service's limits are configured under.
    domain: str
    rate_limit_service: GrpcService
    #: Only the rate limits of this stage apply (several filters, several stages).
    stage: int = attrs.field(default=0, validator=between(0, MAX_RATE_LIMIT_STAGE))
    #: A service that fails: refuse the request (500, flag RLSE) rather than let it pass.
    failure_mode_deny: bool = False
    #: "DRAFT_VERSION_03": x-ratelimit-limit, -remaining and -reset on responses.
    enable_x_ratelimit_headers: Literal["OFF", "DRAFT_VERSION_03"] = "OFF"
    disable_x_envoy_ratelimited_header: bool = False
    #: A gRPC client refused gets RESOURCE_EXHAUSTED instead of UNAVAILABLE.
    rate_limited_as_resource_exhausted: bool = False


@attrs.define
class RateLimitStats:
    """`cluster.NAME.ratelimit.*`, NAME the route's cluster (Envoy's names)."""

    ok: Counter
    over_limit: Counter
    error: Counter
    failure_mode_allowed: Counter


@attrs.frozen
class _Shared:
    """What the streams of one route's filter share."""

    config: RateLimitConfig
    context: FilterContext
    policy: RateLimitPolicy
    #: By cluster: the route's, or each of its weighted clusters (the stream's is the one
    #: picked with the route, in StreamInfo.cluster_name).
    stats: dict[str, RateLimitStats]
    timeout: float


class RateLimitFilter(HttpFilter):
    def __init__(self, shared: _Shared, info: StreamInfo) -> None:
        self._shared = shared
        self._info = info
        self._stats = shared.stats[info.cluster_name]
        #: Headers the service's answer adds to the response, and whether that response
        #: is this filter's 429 (where the service's content-type wins).
        self._response_headers: list[Entry] = []
        self._replied = False
        self._grpc_client = False

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        shared = self._shared
        descriptors = shared.policy.descriptors(request, self._info)
        if not descriptors:
            return None
        ask = rls_pb2.RateLimitRequest(
            domain=shared.config.domain,
            descriptors=[
                ratelimit_pb2.RateLimitDescriptor(
                    entries=[
                        ratelimit_pb2.RateLimitDescriptor.Entry(key=key, value=value)
                        for key, value in descriptor
                    ]
                )
                for descriptor in descriptors
            ],
        )
        answer = None
        self._info.state = "waiting for rate limit service"
        with trio.move_on_after(shared.timeout):
            try:
                cluster = shared.context.clusters.get(shared.config.rate_limit_service.cluster)
                answer = await call_unary(cluster, METHOD, ask, _Response, max_message=MAX_RESPONSE)
            except GatewayError as exc:
                log.debug("ratelimit %s: call failed: %s", shared.context.name, exc)
        self._info.state = "in decode filters"
        headers = self._headers(answer) if answer is not None else None
        if answer is None or headers is None:
            return self._failed()
        request_headers, self._response_headers = headers
        self._grpc_client = is_grpc_request(request)
        if answer.overall_code == _Response.OVER_LIMIT:
            self._stats.over_limit.inc()
            self._replied = True
            exhausted = shared.config.rate_limited_as_resource_exhausted
            return LocalReply(
                429,
                answer.raw_body.decode("utf-8", errors="replace"),
                response_flag="RL",
                grpc_status=Status.RESOURCE_EXHAUSTED if exhausted else None,
            )
        # OK, and UNKNOWN too: Envoy refuses only on OVER_LIMIT.
        self._stats.ok.inc()
        for name, value in request_headers:
            request.headers.add(name, value)
        return None

    def _failed(self) -> LocalReply | None:
        shared = self._shared
        self._stats.error.inc()
        if shared.config.failure_mode_deny:
            return LocalReply(500, "", response_flag="RLSE")
        self._stats.failure_mode_allowed.inc()
        return None

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        added = self._response_headers
        if not added:
            return
        if self._grpc_client:
            # A gRPC answer keeps the content-type that makes it one.
            added = [(name, value) for name, value in added if name != "content-type"]
        elif self._replied and any(name == "content-type" for name, _ in added):
            # The service's content-type replaces the 429's text/plain, as in Envoy.
            response.headers.remove("content-type")
        for name, value in added:
            response.headers.add(name, value)

    def _headers(
        self, answer: "rls_pb2.RateLimitResponse"
    ) -> tuple[list[Entry], list[Entry]] | None:
        """The headers the answer adds to the request and to the response (the service's,
        then x-envoy-ratelimited and x-ratelimit-*, as Envoy adds them); None if one of
        them cannot be sent (the call then failed)."""
        config = self._shared.config
        request = [(h.key.lower(), h.value) for h in answer.request_headers_to_add]
        response = [(h.key.lower(), h.value) for h in answer.response_headers_to_add]
        over_limit = answer.overall_code == _Response.OVER_LIMIT
        if over_limit and not config.disable_x_envoy_ratelimited_header:
            response.append(("x-envoy-ratelimited", "true"))
        if config.enable_x_ratelimit_headers == "DRAFT_VERSION_03":
            response += x_ratelimit_headers(list(answer.statuses))
        if not all(service_may_set(name, value) for name, value in request + response):
            return None
        return request, response


def x_ratelimit_headers(
    statuses: list["rls_pb2.RateLimitResponse.DescriptorStatus"],
) -> list[Entry]:
    """x-ratelimit-limit, -remaining and -reset (draft 03) from the descriptors' statuses,
    as Envoy makes them: the tightest limit (least remaining) and, after it, the quota
    policy of every limit ("10, 10;w=60, 1000;w=3600;name=\"daily\"")."""
    limited = [s for s in statuses if s.HasField("current_limit")]
    if not limited:
        return []
    tightest = min(limited, key=lambda s: s.limit_remaining)
    policy = ""
    for status in limited:
        limit = status.current_limit
        if window := _WINDOWS.get(limit.unit):
            policy += f", {limit.requests_per_unit};w={window}"
            if limit.name:
                policy += f';name="{limit.name}"'
    return [
        ("x-ratelimit-limit", f"{tightest.current_limit.requests_per_unit}{policy}"),
        ("x-ratelimit-remaining", str(tightest.limit_remaining)),
        ("x-ratelimit-reset", str(tightest.duration_until_reset.seconds)),
    ]


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory | None:
    assert isinstance(config, RateLimitConfig)
    route = context.route
    # Requests that match no route, redirects and direct responses go to no cluster:
    # nothing to limit (as Envoy, whose filter needs the route's cluster).
    if route is None or (route.config.cluster is None and not route.config.weighted_clusters):
        return None
    policy = RateLimitPolicy.for_route(route, config.stage, context.service_cluster)
    if not policy:
        return None
    weighted = route.config.weighted_clusters or ()
    targets = [route.config.cluster] if route.config.cluster else [w.name for w in weighted]
    store = context.scope.store
    stats = {
        name: create_stats(
            RateLimitStats,
            store.scope(
                f"cluster.{name}.ratelimit", "cluster_ratelimit", {"envoy_cluster_name": name}
            ),
        )
        for name in targets
    }
    timeout = config.rate_limit_service.timeout
    shared = _Shared(
        config, context, policy, stats, timeout if timeout is not None else DEFAULT_TIMEOUT
    )

    def factory(info: StreamInfo) -> HttpFilter:
        return RateLimitFilter(shared, info)

    return factory


def check(config: object, gateway: GatewayConfig) -> list[tuple[str, str]]:
    assert isinstance(config, RateLimitConfig)
    errors = [("domain", "must not be empty")] if not config.domain else []
    return errors + check_grpc_service(config.rate_limit_service, "rate_limit_service", gateway)


describe(
    "cluster_ratelimit",
    {
        "ok": "requests the rate limit service let through",
        "over_limit": "requests over a limit (429)",
        "error": "requests the rate limit service gave no answer for",
        "failure_mode_allowed": "of the errors, requests let through (failure_mode_deny off)",
    },
)

FILTER_TYPE = HttpFilterType(
    "ratelimit", RateLimitConfig, create_factory, per_route=True, check=check
)
