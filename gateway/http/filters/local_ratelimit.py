"""`local_ratelimit`: a token bucket in this process, for the listener or per route.

```toml
[http_filters.rate]
type = "local_ratelimit"
max_tokens = 100          # bucket size (burst)
tokens_per_fill = 10
fill_interval = "1s"
key = "client_ip"         # optional: one bucket per client IP, or "header:x-api-key"
```

A request takes a token; with none left it gets 429 with `retry-after` (gRPC:
RESOURCE_EXHAUSTED). A route can have its own bucket by overriding the filter's config, or
be exempt by disabling it. Keyed buckets are kept for the most recent `max_keys` keys.
"""

import math
import re
from collections import OrderedDict

import attrs
import trio

from gateway.config.model import UINT32_MAX, Duration, at_least, between
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.observability.stats import Counter
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.grpc import Status
from gateway.protocol.headers import LocalReply, RequestHead


def _check_key(instance: object, attribute: object, value: str | None) -> None:
    if value is not None and value != "client_ip" and not re.fullmatch(r"header:[\w-]+", value):
        raise ValueError(f"'key' must be 'client_ip' or 'header:NAME', got {value!r}")


#: Buckets one filter keeps at most (`max_keys`): ~1,000,000 keys take ~200 MB.
MAX_KEYS = 1_000_000


@attrs.frozen
class LocalRateLimitConfig:
    max_tokens: int = attrs.field(validator=between(1, UINT32_MAX))
    tokens_per_fill: int = attrs.field(default=1, validator=between(1, UINT32_MAX))
    #: Envoy's floor: a bucket refilled more often costs more than it limits.
    fill_interval: Duration = attrs.field(default=Duration(1.0), validator=at_least(0.05))
    key: str | None = attrs.field(default=None, validator=_check_key)
    #: Each key holds a bucket: this bounds the memory clients can make the filter keep.
    max_keys: int = attrs.field(default=10000, validator=between(1, MAX_KEYS))


@attrs.define
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Token buckets by key; pure bookkeeping, shared by every stream of one filter."""

    def __init__(self, config: LocalRateLimitConfig) -> None:
        self._config = config
        self._rate = (
            config.tokens_per_fill / config.fill_interval if config.fill_interval else math.inf
        )
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """0 if a token was taken, else the seconds until one will be there."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self._config.max_tokens), now)
            if len(self._buckets) > self._config.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        bucket.tokens = min(
            float(self._config.max_tokens), bucket.tokens + (now - bucket.updated) * self._rate
        )
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self._rate


@attrs.frozen
class _Shared:
    """What every stream of one configured filter shares: config, buckets, counters."""

    config: LocalRateLimitConfig
    buckets: TokenBuckets
    ok: Counter
    limited: Counter


class LocalRateLimitFilter(HttpFilter):
    def __init__(self, shared: _Shared, info: StreamInfo) -> None:
        self._shared = shared
        self._info = info

    def _key(self, request: RequestHead) -> str:
        key = self._shared.config.key
        if key is None:
            return ""
        if key == "client_ip":
            return self._info.downstream_ip
        return request.headers.get(key.partition(":")[2]) or ""

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        shared = self._shared
        wait = shared.buckets.take(self._key(request), trio.current_time())
        if not wait:
            shared.ok.inc()
            return None
        shared.limited.inc()
        return LocalReply(
            429,
            "rate limited",
            {"retry-after": str(max(1, math.ceil(wait)))},
            response_flag="RL",
            grpc_status=Status.RESOURCE_EXHAUSTED,
        )


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, LocalRateLimitConfig)
    shared = _Shared(
        config,
        TokenBuckets(config),
        context.scope.counter("ok"),
        context.scope.counter("rate_limited"),
    )

    def factory(info: StreamInfo) -> HttpFilter:
        return LocalRateLimitFilter(shared, info)

    return factory


FILTER_TYPE = HttpFilterType(
    "local_ratelimit",
    LocalRateLimitConfig,
    create_factory,
    stats={
        "ok": "requests that took a token",
        "rate_limited": "requests refused with 429",
    },
)
