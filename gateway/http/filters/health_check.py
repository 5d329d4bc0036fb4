"""`health_check`: answers a health path locally, for load balancers in front of us.

```toml
[http_filters.hc]
type = "health_check"
path = "/healthz"
```

The path gets 200 while the gateway is healthy, and 503 once it is draining or after
`POST /healthcheck/fail` on the admin endpoint (until `POST /healthcheck/ok`), so a load
balancer stops sending new traffic before the gateway stops taking it. Other paths pass.
"""

import attrs

from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import LocalReply, RequestHead


@attrs.frozen
class HealthCheckConfig:
    path: str = "/healthz"


class HealthCheckFilter(HttpFilter):
    def __init__(self, config: HealthCheckConfig, context: FilterContext) -> None:
        self._config = config
        self._server = context.server
        self._ok = context.scope.counter("ok")
        self._failed = context.scope.counter("failed")

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        if request.path_only != self._config.path:
            return None
        if self._server.draining or self._server.healthcheck_failed:
            self._failed.inc()
            return LocalReply(503, "unhealthy\n", {"cache-control": "no-cache"})
        self._ok.inc()
        return LocalReply(200, "OK\n", {"cache-control": "no-cache"})


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, HealthCheckConfig)
    shared = HealthCheckFilter(config, context)  # stateless per stream: one instance

    def factory(info: StreamInfo) -> HttpFilter:
        return shared

    return factory


FILTER_TYPE = HttpFilterType(
    "health_check",
    HealthCheckConfig,
    create_factory,
    stats={
        "ok": "health checks answered 200",
        "failed": "health checks answered 503",
    },
)
