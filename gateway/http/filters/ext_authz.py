"""`ext_authz`: asks an authorization service about each request, over HTTP or gRPC.

```toml
[http_filters.authz]
type = "ext_authz"
cluster = "authz"                       # an HTTP service, as a [clusters.*] entry ...
path_prefix = "/check"                  # it sees PREFIX + the original path
allowed_headers = ["authorization"]     # request headers it is shown
headers_to_add = ["x-auth-user"]        # headers of its answer copied onto the request
timeout = "200ms"
failure_mode_allow = false              # if it cannot be asked: refuse (403) or let through

[http_filters.grpc_authz]
type = "ext_authz"
grpc_service = { cluster = "authz_grpc", timeout = "200ms" }  # ... or a gRPC one
```

HTTP: the check is a request with the original method, the prefixed path and the selected
headers, and no body, sent through the cluster's connection pool. A 2xx allows; the
request then goes upstream with the `headers_to_add` from the answer. Any other status
denies: the client gets the service's status and body (up to 8 KiB) and its location,
www-authenticate and content-type headers.

gRPC: the check is envoy.service.auth.v3.Authorization/Check (ext_authz_grpc.py) over the
gateway's own HTTP/2 client; an OK status allows with the answer's header edits (request
and response), any other denies with its denied_response.

Either way, a service that fails, answers what cannot be used, or is slower than its
timeout leads to `status_on_error` (403), or to allowing when `failure_mode_allow` is set.
The check is awaited in the stream's task: a client that leaves cancels it, the route
timeout bounds it, and /tasks shows the stream waiting for the service.
"""

import logging

import attrs
import trio
from envoy.service.auth.v3 import external_auth_pb2

from gateway.clusters.grpc_client import call_unary
from gateway.clusters.http_client import call_service
from gateway.config.model import MIN_PERIOD, Duration, GatewayConfig, GrpcService, at_least, between
from gateway.config.validate import check_grpc_service
from gateway.errors import GatewayError
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.http.filters import ext_authz_grpc
from gateway.http.filters.authz_verdict import HeaderEdit, UnusableAnswer, Verdict, apply_edits
from gateway.observability.stats import Counter
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.grpc import is_grpc_request
from gateway.protocol.headers import HeaderMap, LocalReply, RequestHead, ResponseHead

log = logging.getLogger("gateway.http")

MAX_DENIAL_BODY = 8192
#: A CheckResponse larger than this is a failed check: header edits and a denial's body.
MAX_CHECK_RESPONSE = 64 * 1024
#: Envoy's default for both kinds of service.
DEFAULT_TIMEOUT = 0.2
#: What an HTTP service is shown unless `allowed_headers` says otherwise.
DEFAULT_HTTP_HEADERS = ["authorization"]
#: The denial headers an HTTP service's answer passes to the client.
HTTP_DENIAL_HEADERS = ("location", "www-authenticate", "content-type")


@attrs.frozen
class ExtAuthzConfig:
    #: An HTTP authorization service (set this or grpc_service).
    cluster: str | None = None
    #: A gRPC one (envoy.service.auth.v3.Authorization).
    grpc_service: GrpcService | None = None
    path_prefix: str = ""
    #: Request headers the service is shown; unset: `authorization` for an HTTP
    #: service, every header for a gRPC one (as Envoy).
    allowed_headers: list[str] | None = None
    headers_to_add: list[str] = attrs.Factory(list)
    #: An HTTP service's deadline (a gRPC one's is grpc_service.timeout); unset: 200ms.
    timeout: Duration | None = attrs.field(default=None, validator=at_least(MIN_PERIOD))
    failure_mode_allow: bool = False
    #: What the client gets when the service could not be asked (Envoy's 403).
    status_on_error: int = attrs.field(default=403, validator=between(200, 599))
    #: Sent to a gRPC service with each check (CheckRequest's context_extensions); a
    #: route can send its own by overriding the filter's config.
    context_extensions: dict[str, str] = attrs.Factory(dict)


@attrs.frozen
class _Shared:
    config: ExtAuthzConfig
    context: FilterContext
    timeout: float
    ok: Counter
    denied: Counter
    error: Counter
    failure_mode_allowed: Counter


class ExtAuthzFilter(HttpFilter):
    def __init__(self, shared: _Shared, info: StreamInfo) -> None:
        self._shared = shared
        self._info = info
        #: What the response still needs from the verdict: the allowing answer's
        #: response edits, or the denial's headers.
        self._verdict: Verdict | None = None
        self._grpc_client = False

    async def _ask_http(self, request: RequestHead) -> Verdict:
        config = self._shared.config
        allowed = DEFAULT_HTTP_HEADERS if config.allowed_headers is None else config.allowed_headers
        headers = HeaderMap(
            (name, value)
            for name, value in request.headers
            if name in allowed or name in ("x-request-id", "x-forwarded-for")
        )
        check = RequestHead(
            method=request.method,
            path=config.path_prefix + request.path,
            authority=request.authority,
            scheme=request.scheme,
            headers=headers,
        )
        assert config.cluster is not None
        cluster = self._shared.context.clusters.get(config.cluster)
        answer = await call_service(cluster, check, max_body=MAX_DENIAL_BODY)
        if 200 <= answer.status < 300:
            edits = tuple(
                HeaderEdit(name, value)
                for name in config.headers_to_add
                if (value := answer.headers.get(name)) is not None
            )
            return Verdict(allowed=True, request_edits=edits)
        # The service's answer as it gave it: its body (as UTF-8 text) and the headers that
        # make a denial usable (where to sign in, how to authenticate).
        denial = HeaderMap(
            (name, value)
            for name in HTTP_DENIAL_HEADERS
            if (value := answer.headers.get(name)) is not None
        )
        body = answer.body.decode("utf-8", errors="replace")
        return Verdict(allowed=False, status=answer.status, body=body, denial_headers=denial)

    async def _ask_grpc(self, request: RequestHead, service: GrpcService) -> Verdict:
        config = self._shared.config
        check = ext_authz_grpc.check_request(
            request, self._info, config.allowed_headers, config.context_extensions
        )
        cluster = self._shared.context.clusters.get(service.cluster)
        answer = await call_unary(
            cluster,
            ext_authz_grpc.METHOD,
            check,
            external_auth_pb2.CheckResponse,
            max_message=MAX_CHECK_RESPONSE,
        )
        return ext_authz_grpc.verdict(answer)

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        shared = self._shared
        service = shared.config.grpc_service
        verdict = None
        self._info.state = "waiting for ext_authz service"
        with trio.move_on_after(shared.timeout):
            try:
                if service is not None:
                    verdict = await self._ask_grpc(request, service)
                else:
                    verdict = await self._ask_http(request)
            except (GatewayError, UnusableAnswer) as exc:
                log.debug("ext_authz %s: check failed: %s", shared.context.name, exc)
        self._info.state = "in decode filters"
        if verdict is None:
            shared.error.inc()
            if shared.config.failure_mode_allow:
                shared.failure_mode_allowed.inc()
                return None
            return LocalReply(
                shared.config.status_on_error,
                "authorization service unavailable",
                response_flag="UAEX",
            )
        if verdict.allowed:
            shared.ok.inc()
            apply_edits(request.headers, verdict.request_edits)
            request.headers.remove_names(verdict.request_removals)
            self._verdict = verdict if verdict.response_edits else None
            return None
        shared.denied.inc()
        self._verdict = verdict if verdict.denial_headers else None
        self._grpc_client = is_grpc_request(request)
        return LocalReply(verdict.status, verdict.body, response_flag="UAEX")

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        verdict = self._verdict
        if verdict is None:
            return
        if verdict.allowed:
            apply_edits(response.headers, verdict.response_edits)
            return
        # The denial's headers replace the local reply's own of the same names, except its
        # framing and, for a gRPC client, the content-type that makes it a gRPC answer.
        kept = {"content-length", "content-type"} if self._grpc_client else {"content-length"}
        denial = [(name, value) for name, value in verdict.denial_headers if name not in kept]
        response.headers.remove_names({name for name, _ in denial})
        for name, value in denial:
            response.headers.add(name, value)


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, ExtAuthzConfig)
    service_timeout = config.grpc_service.timeout if config.grpc_service else config.timeout
    shared = _Shared(
        config,
        context,
        service_timeout if service_timeout is not None else DEFAULT_TIMEOUT,
        context.scope.counter("ok"),
        context.scope.counter("denied"),
        context.scope.counter("error"),
        context.scope.counter("failure_mode_allowed"),
    )

    def factory(info: StreamInfo) -> HttpFilter:
        return ExtAuthzFilter(shared, info)

    return factory


#: Keys that only an HTTP service takes.
_HTTP_ONLY = ("path_prefix", "headers_to_add", "timeout")


def check(config: object, gateway: GatewayConfig) -> list[tuple[str, str]]:
    assert isinstance(config, ExtAuthzConfig)
    if (config.cluster is None) == (config.grpc_service is None):
        return [("", "set exactly one of cluster (an HTTP service) and grpc_service (a gRPC one)")]
    defaults = ExtAuthzConfig(cluster="-")
    if config.grpc_service is None:
        if config.context_extensions:
            return [("context_extensions", "only for a gRPC service (grpc_service)")]
        return []
    errors = [
        (key, "only for an HTTP service (cluster); a gRPC one takes grpc_service.timeout")
        if key == "timeout"
        else (key, "only for an HTTP service (cluster)")
        for key in _HTTP_ONLY
        if getattr(config, key) != getattr(defaults, key)
    ]
    return errors + check_grpc_service(config.grpc_service, "grpc_service", gateway)


FILTER_TYPE = HttpFilterType(
    "ext_authz",
    ExtAuthzConfig,
    create_factory,
    check=check,
    stats={
        "ok": "requests the authorization service allowed",
        "denied": "requests it denied",
        "error": "checks that got no answer",
        "failure_mode_allowed": "of the errors, requests let through by failure_mode_allow",
    },
)
