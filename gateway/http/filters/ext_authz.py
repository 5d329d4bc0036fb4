"""`ext_authz`: asks an authorization service (an HTTP cluster) about each request.

```toml
[http_filters.authz]
type = "ext_authz"
cluster = "authz"                       # the service, as a [clusters.*] entry
path_prefix = "/check"                  # it sees PREFIX + the original path
allowed_headers = ["authorization"]     # request headers it is shown
headers_to_add = ["x-auth-user"]        # headers of its answer copied onto the request
timeout = "200ms"
failure_mode_allow = false              # if it cannot be asked: refuse (403) or let through
```

The check is a request with the original method, the prefixed path and the selected
headers, and no body, sent through the cluster's connection pool. A 2xx allows; the request
then goes upstream with the `headers_to_add` from the answer. Any other status denies: the
client gets the service's status and body (up to 8 KiB). A service that fails or is slower
than `timeout` leads to 403, or to allowing when `failure_mode_allow` is set. The check is
awaited in the stream's task: a client that leaves cancels it.
"""

import attrs
import trio

from gateway.clusters.http_client import ServiceResponse, call_service
from gateway.config.model import MIN_PERIOD, Duration, at_least
from gateway.errors import GatewayError
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.observability.stats import Counter
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import HeaderMap, LocalReply, RequestHead

MAX_DENIAL_BODY = 8192


@attrs.frozen
class ExtAuthzConfig:
    cluster: str
    path_prefix: str = ""
    allowed_headers: list[str] = attrs.Factory(lambda: ["authorization"])
    headers_to_add: list[str] = attrs.Factory(list)
    timeout: Duration = attrs.field(default=Duration(0.2), validator=at_least(MIN_PERIOD))
    failure_mode_allow: bool = False


@attrs.frozen
class _Shared:
    config: ExtAuthzConfig
    context: FilterContext
    ok: Counter
    denied: Counter
    error: Counter


class ExtAuthzFilter(HttpFilter):
    def __init__(self, shared: _Shared) -> None:
        self._shared = shared

    async def _ask(self, request: RequestHead) -> ServiceResponse:
        config = self._shared.config
        headers = HeaderMap(
            (name, value)
            for name, value in request.headers
            if name in config.allowed_headers or name in ("x-request-id", "x-forwarded-for")
        )
        check = RequestHead(
            method=request.method,
            path=config.path_prefix + request.path,
            authority=request.authority,
            scheme=request.scheme,
            headers=headers,
        )
        cluster = self._shared.context.clusters.get(config.cluster)
        return await call_service(cluster, check, max_body=MAX_DENIAL_BODY)

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        shared = self._shared
        verdict = None
        with trio.move_on_after(shared.config.timeout):
            try:
                verdict = await self._ask(request)
            except GatewayError:
                verdict = None
        if verdict is None:
            shared.error.inc()
            if shared.config.failure_mode_allow:
                return None
            return LocalReply(403, "authorization service unavailable", response_flag="UAEX")
        if 200 <= verdict.status < 300:
            shared.ok.inc()
            for name in shared.config.headers_to_add:
                if (value := verdict.headers.get(name)) is not None:
                    request.headers.set(name, value)
            return None
        shared.denied.inc()
        # The service's answer as it gave it: its body (as UTF-8 text) and the headers that
        # make a denial usable (where to sign in, how to authenticate).
        passed = {
            name: value
            for name in ("location", "www-authenticate", "content-type")
            if (value := verdict.headers.get(name)) is not None
        }
        body = verdict.body.decode("utf-8", errors="replace")
        return LocalReply(verdict.status, body, passed, response_flag="UAEX")


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, ExtAuthzConfig)
    shared = _Shared(
        config,
        context,
        context.scope.counter("ok"),
        context.scope.counter("denied"),
        context.scope.counter("error"),
    )

    def factory(info: StreamInfo) -> HttpFilter:
        return ExtAuthzFilter(shared)

    return factory


FILTER_TYPE = HttpFilterType(
    "ext_authz",
    ExtAuthzConfig,
    create_factory,
    stats={
        "ok": "requests the authorization service allowed",
        "denied": "requests it denied",
        "error": "checks that got no answer",
    },
)
