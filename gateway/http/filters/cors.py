"""`cors`: Cross-Origin Resource Sharing; preflights answered here, responses marked.

```toml
[http_filters.cors]
type = "cors"
allow_origins = ["https://app.example.com"]
allow_origin_regex = ["https://.*\\\\.example\\\\.org"]
allow_methods = ["GET", "POST"]
allow_headers = ["content-type", "authorization"]
expose_headers = ["x-request-id"]
allow_credentials = true
max_age = "10m"
```

A preflight (OPTIONS with Origin and Access-Control-Request-Method) from an allowed origin
gets 200 with the allow headers and never reaches the upstream. A preflight from any other
origin gets 403 without allow headers. Actual requests from an allowed origin get
Access-Control-Allow-Origin (and -Credentials, -Expose-Headers) on their response; others
pass untouched, so the browser enforces the policy.
"""

import attrs

from gateway.config.model import Duration, check_regexes
from gateway.config.regex import Regex, compile_regex
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.observability.stats import Counter
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import LocalReply, RequestHead, ResponseHead


@attrs.frozen
class CorsConfig:
    allow_origins: list[str] = attrs.Factory(list)
    allow_origin_regex: list[str] = attrs.field(factory=list, validator=check_regexes)
    allow_methods: list[str] = attrs.Factory(lambda: ["GET", "HEAD", "POST"])
    allow_headers: list[str] = attrs.Factory(list)
    expose_headers: list[str] = attrs.Factory(list)
    allow_credentials: bool = False
    max_age: Duration | None = None


@attrs.frozen
class _Policy:
    config: CorsConfig
    regexes: tuple[Regex, ...]
    preflights: Counter
    denied: Counter

    def allows(self, origin: str) -> bool:
        return origin in self.config.allow_origins or any(r.fullmatch(origin) for r in self.regexes)


class CorsFilter(HttpFilter):
    def __init__(self, policy: _Policy) -> None:
        self._policy = policy
        self._origin: str | None = None

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        origin = request.headers.get("origin")
        policy = self._policy
        if origin is None:
            return None
        allowed = policy.allows(origin)
        preflight = (
            request.method == "OPTIONS" and "access-control-request-method" in request.headers
        )
        if not preflight:
            self._origin = origin if allowed else None
            return None
        if not allowed:
            policy.denied.inc()
            return LocalReply(403, "CORS origin not allowed")
        policy.preflights.inc()
        config = policy.config
        headers = {
            "access-control-allow-origin": origin,
            "access-control-allow-methods": ", ".join(config.allow_methods),
            "vary": "origin",
        }
        if config.allow_headers:
            headers["access-control-allow-headers"] = ", ".join(config.allow_headers)
        if config.allow_credentials:
            headers["access-control-allow-credentials"] = "true"
        if config.max_age is not None:
            headers["access-control-max-age"] = str(int(config.max_age))
        return LocalReply(200, "", headers)

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        if self._origin is None:
            return
        config = self._policy.config
        response.headers.set("access-control-allow-origin", self._origin)
        response.headers.add("vary", "origin")
        if config.allow_credentials:
            response.headers.set("access-control-allow-credentials", "true")
        if config.expose_headers:
            response.headers.set("access-control-expose-headers", ", ".join(config.expose_headers))


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, CorsConfig)
    policy = _Policy(
        config,
        tuple(compile_regex(r) for r in config.allow_origin_regex),
        context.scope.counter("preflights"),
        context.scope.counter("origin_denied"),
    )

    def factory(info: StreamInfo) -> HttpFilter:
        return CorsFilter(policy)

    return factory


FILTER_TYPE = HttpFilterType(
    "cors",
    CorsConfig,
    create_factory,
    stats={
        "preflights": "preflights from allowed origins (200)",
        "origin_denied": "preflights from other origins (403)",
    },
)
