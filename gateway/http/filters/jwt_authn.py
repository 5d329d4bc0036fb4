"""`jwt_authn`: verifies JSON Web Tokens before requests go upstream.

```toml
[http_filters.jwt]
type = "jwt_authn"
issuer = "https://auth.example.com"      # optional: the `iss` a token must carry
audiences = ["api"]                      # optional: one must be in `aud`
algorithms = ["RS256", "ES256"]
local_jwks = { path = "/etc/gateway/jwks.json" }
# or: remote_jwks = { cluster = "auth", path = "/.well-known/jwks.json",
#                     cache_duration = "5m", timeout = "1s" }
claims_to_headers = { sub = "x-jwt-sub" }
forward = false                          # drop the token before the upstream sees it
allow_missing = false
```

The token comes from `Authorization: Bearer ...`. Its signature (RS256, ES256, HS256, ...
as PyJWT verifies them), expiry, not-before, issuer and audience are checked against the
JWKS; a failure gets 401 with `www-authenticate: Bearer error="invalid_token"` and the
upstream never sees the request. Remote JWKS are fetched through a cluster by a background
task every `cache_duration`; requests use the cached set (and wait for the first fetch).
"""

import json
import logging
from typing import Any

import attrs
import jwt
import trio

from gateway.clusters.http_client import call_service
from gateway.config.files import read_file
from gateway.config.model import MIN_PERIOD, Duration, at_least
from gateway.errors import GatewayError
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.observability.stats import Counter
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import HeaderMap, LocalReply, RequestHead

log = logging.getLogger("gateway.filters")

MAX_JWKS_BYTES = 1 << 20


def _read_jwks_file(path: str) -> jwt.PyJWKSet:
    return jwt.PyJWKSet.from_dict(json.loads(read_file(path, MAX_JWKS_BYTES)))


def _check_jwks_file(instance: object, attribute: object, value: str) -> None:
    try:
        _read_jwks_file(value)
    except (ValueError, jwt.PyJWKError, jwt.PyJWKSetError) as exc:
        raise ValueError(f"'path' must be a readable JWKS file: {exc}") from None


@attrs.frozen
class LocalJwks:
    path: str = attrs.field(validator=_check_jwks_file)


@attrs.frozen
class RemoteJwks:
    cluster: str
    path: str
    cache_duration: Duration = attrs.field(default=Duration(300.0), validator=at_least(1.0))
    timeout: Duration = attrs.field(default=Duration(1.0), validator=at_least(MIN_PERIOD))


def _one_source(instance: "JwtAuthnConfig", attribute: object, value: RemoteJwks | None) -> None:
    if (instance.local_jwks is None) == (instance.remote_jwks is None):
        raise ValueError("'remote_jwks' must be set, or 'local_jwks', but not both")


@attrs.frozen
class JwtAuthnConfig:
    local_jwks: LocalJwks | None = None
    remote_jwks: RemoteJwks | None = attrs.field(default=None, validator=_one_source)
    issuer: str | None = None
    audiences: list[str] = attrs.Factory(list)
    algorithms: list[str] = attrs.Factory(lambda: ["RS256", "ES256"])
    claims_to_headers: dict[str, str] = attrs.Factory(dict)
    forward: bool = False
    allow_missing: bool = False


class JwksCache:
    """The current key set; a remote one is refreshed by the background task."""

    def __init__(self, config: JwtAuthnConfig, context: FilterContext) -> None:
        self._config = config
        self._context = context
        self._keys: jwt.PyJWKSet | None = None
        self._ready = trio.Event()
        if config.local_jwks is not None:
            self._keys = _read_jwks_file(config.local_jwks.path)
            self._ready.set()

    async def keys(self) -> jwt.PyJWKSet | None:
        await self._ready.wait()
        return self._keys

    async def refresh_forever(self) -> None:
        remote = self._config.remote_jwks
        assert remote is not None
        while True:
            with trio.move_on_after(remote.timeout):
                try:
                    await self._fetch(remote)
                except (GatewayError, ValueError, jwt.PyJWKSetError) as exc:
                    log.warning("jwt_authn %s: JWKS fetch failed: %s", self._context.name, exc)
            self._ready.set()  # requests go on with the last good set (or none)
            await trio.sleep(remote.cache_duration)

    async def _fetch(self, remote: RemoteJwks) -> None:
        cluster = self._context.clusters.get(remote.cluster)
        request = RequestHead("GET", remote.path, cluster.name, "http", HeaderMap())
        response = await call_service(cluster, request, max_body=MAX_JWKS_BYTES)
        if response.status != 200:
            raise ValueError(f"JWKS endpoint answered {response.status}")
        self._keys = jwt.PyJWKSet.from_dict(json.loads(response.body))


@attrs.frozen
class _Shared:
    config: JwtAuthnConfig
    jwks: JwksCache
    allowed: Counter
    denied: Counter


def _unauthorized(description: str) -> LocalReply:
    challenge = f'Bearer realm="gateway", error="invalid_token", error_description="{description}"'
    return LocalReply(
        401, f"Jwt verification fails: {description}", {"www-authenticate": challenge}
    )


class JwtAuthnFilter(HttpFilter):
    def __init__(self, shared: _Shared) -> None:
        self._shared = shared

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        shared = self._shared
        config = shared.config
        # Claim headers come from a verified token or not at all: a client's own copies go.
        request.headers.remove_names(set(config.claims_to_headers.values()))
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            if config.allow_missing:
                return None
            shared.denied.inc()
            return LocalReply(401, "Jwt is missing", {"www-authenticate": 'Bearer realm="gateway"'})
        try:
            claims = self._verify(token.strip(), await shared.jwks.keys())
        except (jwt.PyJWTError, LookupError) as exc:
            shared.denied.inc()
            return _unauthorized(type(exc).__name__)
        shared.allowed.inc()
        for claim, header in config.claims_to_headers.items():
            if claim in claims:
                request.headers.set(header, str(claims[claim]))
        if not config.forward:
            request.headers.remove("authorization")
        return None

    def _verify(self, token: str, keys: jwt.PyJWKSet | None) -> dict[str, Any]:
        if keys is None:
            raise LookupError("no keys")
        kid = jwt.get_unverified_header(token).get("kid")
        candidates = [k for k in keys.keys if kid is None or k.key_id == kid]
        if not candidates:
            raise LookupError("unknown kid")
        config = self._shared.config
        claims: dict[str, Any] = jwt.decode(
            token,
            key=candidates[0],
            algorithms=config.algorithms,
            issuer=config.issuer,
            audience=config.audiences or None,
            options={"verify_aud": bool(config.audiences)},
        )
        return claims


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, JwtAuthnConfig)
    jwks = JwksCache(config, context)
    if config.remote_jwks is not None:
        context.server.background.append((f"jwks refresh {context.name}", jwks.refresh_forever))
    shared = _Shared(
        config, jwks, context.scope.counter("allowed"), context.scope.counter("denied")
    )

    def factory(info: StreamInfo) -> HttpFilter:
        return JwtAuthnFilter(shared)

    return factory


FILTER_TYPE = HttpFilterType(
    "jwt_authn",
    JwtAuthnConfig,
    create_factory,
    stats={
        "allowed": "requests whose token verified",
        "denied": "requests refused with 401",
    },
)
