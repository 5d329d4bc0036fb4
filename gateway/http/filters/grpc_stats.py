"""`grpc_stats`: counts gRPC calls per method, by status, with their messages (Envoy's
grpc_stats filter).

```toml
[http_filters.grpc]
type = "grpc_stats"
individual_method_stats_allowlist = { services = [
    { name = "shop.Cart", method_names = ["Add", "Checkout"] },
] }
enable_upstream_stats = true
```

A gRPC call (`content-type: application/grpc*`, path `/SERVICE/METHOD`) is counted in the
stats of its route's cluster, as Envoy names them: `cluster.NAME.grpc.SERVICE.METHOD.*` for
a method that has stats of its own, `cluster.NAME.grpc.*` for every other call. Its status
(`grpc-status`, from the trailers or a trailers-only response) counts once in `total`, in
`success` or `failure`, and in a counter named by the code; its messages count as their
length prefixes pass, in `request_message_count` and `response_message_count`.

Which methods have stats of their own is bounded, because the names come from clients: the
allowlist, or with `stats_for_all_methods` the first `max_methods` (cluster, service,
method) seen by the filter whose names could be protobuf names; other calls are counted in
the cluster's `grpc.*` stats and in the filter's own `method_stats_overflow`.
"""

import re
import time

import attrs

from gateway.config.model import between
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.observability.stats import (
    Counter,
    Histogram,
    Scope,
    StatsStore,
    create_stats,
    describe,
)
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.grpc import FrameCounter, is_grpc_request, service_and_method
from gateway.protocol.headers import HeaderMap, LocalReply, RequestHead, ResponseHead

#: The status codes of the gRPC spec, each counted under its own name; any other value is
#: counted as UNKNOWN (2), as gRPC clients read it, so an upstream cannot make new names.
_STATUS_CODES = frozenset(str(code) for code in range(17))
_UNKNOWN = "2"
#: What protobuf names are (a method's has no dot), bounded: with stats_for_all_methods a
#: name is kept in several stats' names and labels, and a client may send 60 KiB paths.
_SERVICE_NAME = re.compile(r"[A-Za-z0-9_.]{1,200}")
_METHOD_NAME = re.compile(r"[A-Za-z0-9_]{1,200}")


@attrs.frozen
class GrpcService:
    """One service of an allowlist (Envoy's GrpcMethodList.Service)."""

    name: str = attrs.field(validator=attrs.validators.min_len(1))
    method_names: list[str] = attrs.field(validator=attrs.validators.min_len(1))


@attrs.frozen
class GrpcMethodList:
    services: list[GrpcService]


def _one_specifier(instance: "GrpcStatsConfig", attribute: object, value: bool) -> None:
    if value and instance.individual_method_stats_allowlist is not None:
        raise ValueError(
            "'stats_for_all_methods' must not be set together with "
            "individual_method_stats_allowlist"
        )


@attrs.frozen
class GrpcStatsConfig:
    #: Methods that get stats of their own; other calls count in `cluster.NAME.grpc.*`.
    individual_method_stats_allowlist: GrpcMethodList | None = None
    #: Every method gets stats of its own (up to `max_methods`). Envoy's default: false.
    stats_for_all_methods: bool = attrs.field(default=False, validator=_one_specifier)
    #: With `stats_for_all_methods`: the most (cluster, service, method) stat sets this
    #: filter makes. Not Envoy's: it bounds the stats a client can make with random paths.
    max_methods: int = attrs.field(default=1000, validator=between(1, 100_000))
    #: Also the `upstream_rq_time` histogram (ms), per method as the counters.
    enable_upstream_stats: bool = False


@attrs.define
class GrpcCallStats:
    """One `cluster.NAME.grpc[.SERVICE.METHOD]` set of stats."""

    success: Counter
    failure: Counter
    total: Counter
    request_message_count: Counter
    response_message_count: Counter
    upstream_rq_time: Histogram | None
    #: Where the counters by status code are made, as codes are seen (at most the 17 of
    #: the spec), into `by_status`.
    status_scope: Scope
    by_status: dict[str, Counter]

    def charge(self, status: str) -> None:
        code = status.strip()
        if code not in _STATUS_CODES:
            code = _UNKNOWN
        counter = self.by_status.get(code)
        if counter is None:
            counter = self.by_status[code] = self.status_scope.counter(code)
        counter.inc()
        (self.success if code == "0" else self.failure).inc()
        self.total.inc()


class MethodStats:
    """The stat sets one configured filter counts into, shared by its streams: one per
    (cluster, service, method) that has stats of its own, one per cluster for the rest.
    Pure bookkeeping over the stats store, which keeps every stat it ever made; hence the
    bound on how many sets a filter may make for names that clients choose."""

    def __init__(self, config: GrpcStatsConfig, store: StatsStore, overflow: Counter) -> None:
        self._store = store
        self._all_methods = config.stats_for_all_methods
        self._max_methods = config.max_methods
        self._upstream_stats = config.enable_upstream_stats
        allowlist = config.individual_method_stats_allowlist
        self._allowed = frozenset(
            (service.name, method)
            for service in (allowlist.services if allowlist is not None else ())
            for method in service.method_names
        )
        self._overflow = overflow
        self._methods: dict[tuple[str, str, str], GrpcCallStats] = {}
        self._aggregates: dict[str, GrpcCallStats] = {}

    def lookup(self, cluster: str, service: str, method: str) -> GrpcCallStats:
        key = (cluster, service, method)
        stats = self._methods.get(key)
        if stats is not None:
            return stats
        if (service, method) in self._allowed:
            stats = self._methods[key] = self._create(cluster, service, method)
            return stats
        if self._all_methods:
            if (
                len(self._methods) < self._max_methods
                and _SERVICE_NAME.fullmatch(service)
                and _METHOD_NAME.fullmatch(method)
            ):
                stats = self._methods[key] = self._create(cluster, service, method)
                return stats
            self._overflow.inc()
        aggregate = self._aggregates.get(cluster)
        if aggregate is None:
            aggregate = self._aggregates[cluster] = self._create(cluster, None, None)
        return aggregate

    def _create(self, cluster: str, service: str | None, method: str | None) -> GrpcCallStats:
        # Envoy's tag names: with the service and method as tags, the Prometheus family is
        # the same for every method (envoy_cluster_grpc_success{...}), whatever clients send.
        labels = {"envoy_cluster_name": cluster}
        prefix = f"cluster.{cluster}.grpc"
        if service is not None and method is not None:
            labels |= {"envoy_grpc_bridge_service": service, "envoy_grpc_bridge_method": method}
            prefix = f"{prefix}.{service}.{method}"
        scope = self._store.scope(prefix, "cluster_grpc", labels)
        upstream_rq_time = scope.histogram("upstream_rq_time") if self._upstream_stats else None
        return create_stats(
            GrpcCallStats,
            scope,
            upstream_rq_time=upstream_rq_time,
            status_scope=scope,
            by_status={},
        )


class GrpcStatsFilter(HttpFilter):
    def __init__(self, methods: MethodStats, info: StreamInfo) -> None:
        self._methods = methods
        self._info = info
        #: The call's (service, method); None when the request is not a gRPC call.
        self._call: tuple[str, str] | None = None
        self._stats: GrpcCallStats | None = None
        self._requests: FrameCounter | None = None
        self._responses: FrameCounter | None = None
        self._charged = False
        #: When the request's end passed (for upstream_rq_time).
        self._request_end: float | None = None

    def _resolve(self) -> GrpcCallStats | None:
        """The call's stats, looked up once the cluster is known: the route chose it."""
        if self._stats is None and self._call is not None:
            cluster = self._info.cluster_name
            if cluster == "-":  # no route, or one without a cluster: nothing to count into
                self._call = None
                return None
            self._stats = self._methods.lookup(cluster, *self._call)
        return self._stats

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        if is_grpc_request(request):
            self._call = service_and_method(request.path_only)
            if self._call is not None:
                self._requests = FrameCounter()
                if end_stream:
                    self._request_end = time.monotonic()
        return None

    async def decode_data(self, data: bytes, end_stream: bool) -> bytes:
        if self._requests is not None:
            found = self._requests.inspect(data)
            if found and (stats := self._resolve()) is not None:
                stats.request_message_count.inc(found)
            if end_stream:
                self._request_end = time.monotonic()
        return data

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        if self._call is None:
            return
        content_type = response.headers.get("content-type") or ""
        if content_type.startswith("application/grpc"):
            self._responses = FrameCounter()
        status = response.headers.get("grpc-status")
        if status is not None:  # a trailers-only response
            self._charge(status)

    async def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        if self._responses is not None:
            found = self._responses.inspect(data)
            if found and (stats := self._resolve()) is not None:
                stats.response_message_count.inc(found)
        return data

    async def encode_trailers(self, trailers: HeaderMap) -> bytes | None:
        status = trailers.get("grpc-status")
        if self._call is None or status is None:
            return None
        stats = self._charge(status)
        # Envoy's upstream_rq_time: from the request's last byte on its way up to the
        # response's end, for responses that came from an upstream.
        if (
            stats is not None
            and stats.upstream_rq_time is not None
            and self._request_end is not None
            and self._info.upstream_host != "-"
        ):
            stats.upstream_rq_time.record((time.monotonic() - self._request_end) * 1000)
        return None

    def _charge(self, status: str) -> GrpcCallStats | None:
        """Counts the call's status, once: a status in both the head and the trailers
        (which no gRPC server sends) counts as the first."""
        if self._charged:
            return None
        self._charged = True
        stats = self._resolve()
        if stats is not None:
            stats.charge(status)
        return stats


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, GrpcStatsConfig)
    methods = MethodStats(
        config, context.scope.store, context.scope.counter("method_stats_overflow")
    )

    def factory(info: StreamInfo) -> HttpFilter:
        return GrpcStatsFilter(methods, info)

    return factory


describe(
    "cluster_grpc",
    {
        "success": "gRPC calls that ended with grpc-status 0 (OK)",
        "failure": "gRPC calls that ended with another grpc-status",
        "total": "gRPC calls that ended with a grpc-status",
        "request_message_count": "gRPC messages clients sent",
        "response_message_count": "gRPC messages upstreams answered",
        "upstream_rq_time": "ms from the end of the request to the trailers",
        **{str(code): f"gRPC calls that ended with grpc-status {code}" for code in range(17)},
    },
)

FILTER_TYPE = HttpFilterType(
    "grpc_stats",
    GrpcStatsConfig,
    create_factory,
    stats={"method_stats_overflow": "calls counted without their method (max_methods reached)"},
)
