"""`fault`: injects aborts and delays, to test how clients and services cope (Envoy's fault).

```toml
[http_filters.chaos]
type = "fault"
abort = { http_status = 503, percentage = 10 }        # or grpc_status = 14 for gRPC
delay = { fixed_delay = "200ms", percentage = 50 }
header_control = true    # x-envoy-fault-abort-request: 503, x-envoy-fault-delay-request: 200
```

A delay is a sleep in the stream's task: a client that leaves cancels it. With
`header_control`, the request headers `x-envoy-fault-abort-request` (an HTTP status) and
`x-envoy-fault-delay-request` (milliseconds) ask for a fault on that request, as in Envoy.
"""

import random

import attrs
import trio

from gateway.config.model import Duration, between
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.observability.stats import Counter
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import LocalReply, RequestHead

_percentage = between(0, 100)


@attrs.frozen
class FaultAbort:
    http_status: int = attrs.field(default=503, validator=between(200, 599))
    #: A gRPC status code (0-16) for gRPC requests.
    grpc_status: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(between(0, 16))
    )
    percentage: float = attrs.field(default=100.0, validator=_percentage)


@attrs.frozen
class FaultDelay:
    fixed_delay: Duration
    percentage: float = attrs.field(default=100.0, validator=_percentage)


@attrs.frozen
class FaultConfig:
    abort: FaultAbort | None = None
    delay: FaultDelay | None = None
    header_control: bool = False


class FaultFilter(HttpFilter):
    def __init__(self, config: FaultConfig, aborts: Counter, delays: Counter) -> None:
        self._config = config
        self._aborts = aborts
        self._delays = delays

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        config = self._config
        delay: float | None = None
        if config.delay is not None and random.uniform(0, 100) < config.delay.percentage:
            delay = config.delay.fixed_delay
        abort = None
        if config.abort is not None and random.uniform(0, 100) < config.abort.percentage:
            abort = config.abort
        if config.header_control:
            asked_delay = request.headers.get("x-envoy-fault-delay-request")
            if asked_delay is not None and asked_delay.isdigit():
                delay = int(asked_delay) / 1000
            asked_abort = request.headers.get("x-envoy-fault-abort-request")
            if asked_abort is not None and asked_abort.isdigit() and 200 <= int(asked_abort) <= 599:
                abort = FaultAbort(http_status=int(asked_abort))
        if delay:
            self._delays.inc()
            await trio.sleep(delay)
        if abort is not None:
            self._aborts.inc()
            return LocalReply(
                abort.http_status,
                "fault filter abort",
                response_flag="FI",
                grpc_status=abort.grpc_status,
            )
        return None


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, FaultConfig)
    shared = FaultFilter(
        config, context.scope.counter("aborts_injected"), context.scope.counter("delays_injected")
    )

    def factory(info: StreamInfo) -> HttpFilter:
        return shared  # no per-stream state

    return factory


FILTER_TYPE = HttpFilterType(
    "fault",
    FaultConfig,
    create_factory,
    stats={
        "aborts_injected": "requests aborted",
        "delays_injected": "requests delayed",
    },
)
