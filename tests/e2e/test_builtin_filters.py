"""The built-in HTTP filters end to end, and per-route filter overrides."""

import httpx
import pytest
import trio

from tests.config_builder import proxy_config, route
from tests.helpers import admin_url, run_gateway, start_upstream, url

#: The built-in filters, in the order the listener runs them.
FILTERS = {
    "hc": {"type": "health_check", "path": "/healthz"},
    "rbac": {
        "type": "rbac",
        "action": "deny",
        "rules": [
            {"path_prefixes": ["/admin"]},
            {"methods": ["DELETE"], "headers": [{"name": "x-role", "exact": "guest"}]},
        ],
    },
    "cors": {
        "type": "cors",
        "allow_origins": ["https://app.example.com"],
        "allow_origin_regex": ["https://.*[.]example[.]org"],
        "allow_methods": ["GET", "PUT"],
        "allow_headers": ["content-type"],
        "expose_headers": ["x-request-id"],
        "allow_credentials": True,
        "max_age": "10m",
    },
    "chaos": {"type": "fault", "header_control": True},
    "rate": {
        "type": "local_ratelimit",
        "max_tokens": 3,
        "tokens_per_fill": 1,
        "fill_interval": "1h",
        "key": "header:x-user",
    },
    "buffer": {"type": "buffer", "max_request_bytes": 1000},
}

ROUTES = [
    route("/unlimited", cluster="backend", http_filters={"rate": {"disabled": True}}),
    route(
        "/strict",
        cluster="backend",
        http_filters={"rate": {"config": {"max_tokens": 1, "fill_interval": "1h"}}},
    ),
]


@pytest.fixture
async def gw(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(proxy_config(up.port, http_filters=FILTERS, routes=ROUTES)) as gw:
        gw.upstream = up
        yield gw


async def test_health_check_answers_locally_and_follows_the_server(gw):
    async with httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/healthz"))
        assert (r.status_code, r.text) == (200, "OK\n")
        await client.post(admin_url(gw, "/healthcheck/fail"))
        assert (await client.get(url(gw, "/healthz"))).status_code == 503
        await client.post(admin_url(gw, "/healthcheck/ok"))
        assert (await client.get(url(gw, "/healthz"))).status_code == 200
    assert gw.upstream.requests == []
    assert gw.stats.value("http.edge.hc.failed") == 1


async def test_buffer_holds_the_body_and_refuses_oversized(gw):
    async with httpx.AsyncClient() as client:
        r = await client.post(url(gw, "/b"), content=b"x" * 900, headers={"x-user": "b1"})
        assert r.json()["body_bytes"] == 900

        async def chunked():
            for _ in range(20):
                yield b"y" * 100

        too_big = await client.post(url(gw, "/b"), content=chunked(), headers={"x-user": "b2"})
        assert too_big.status_code == 413
        declared = await client.post(url(gw, "/b"), content=b"z" * 5000, headers={"x-user": "b3"})
        assert declared.status_code == 413
    assert gw.stats.value("http.edge.buffer.rq_too_large") == 2


async def test_rate_limit_per_key_with_route_overrides(gw):
    async with httpx.AsyncClient() as client:
        statuses = [
            (await client.get(url(gw, "/r"), headers={"x-user": "alice"})).status_code
            for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]
        limited = await client.get(url(gw, "/r"), headers={"x-user": "alice"})
        assert int(limited.headers["retry-after"]) >= 1
        assert (await client.get(url(gw, "/r"), headers={"x-user": "bob"})).status_code == 200
        free = [
            (await client.get(url(gw, "/unlimited"), headers={"x-user": "alice"})).status_code
            for _ in range(5)
        ]
        assert free == [200] * 5
        strict = [
            (await client.get(url(gw, "/strict"), headers={"x-user": "carol"})).status_code
            for _ in range(2)
        ]
        assert strict == [200, 429]
    assert gw.stats.value("http.edge.rate.rate_limited") == 3


async def test_fault_abort_and_delay_on_request(gw):
    async with httpx.AsyncClient() as client:
        r = await client.get(url(gw, "/f"), headers={"x-envoy-fault-abort-request": "418"})
        assert r.status_code == 418
        start = trio.current_time()
        r = await client.get(url(gw, "/f"), headers={"x-envoy-fault-delay-request": "300"})
        assert r.status_code == 200
        assert trio.current_time() - start >= 0.3
    assert gw.stats.value("http.edge.chaos.aborts_injected") == 1
    assert gw.stats.value("http.edge.chaos.delays_injected") == 1


async def test_cors_preflight_and_actual_requests(gw):
    async with httpx.AsyncClient() as client:
        preflight = await client.options(
            url(gw, "/api"),
            headers={
                "origin": "https://app.example.com",
                "access-control-request-method": "PUT",
            },
        )
        assert preflight.status_code == 200
        h = preflight.headers
        assert h["access-control-allow-origin"] == "https://app.example.com"
        assert h["access-control-allow-methods"] == "GET, PUT"
        assert h["access-control-allow-credentials"] == "true"
        assert h["access-control-max-age"] == "600"
        denied = await client.options(
            url(gw, "/api"),
            headers={"origin": "https://evil.test", "access-control-request-method": "PUT"},
        )
        assert denied.status_code == 403
        assert "access-control-allow-origin" not in denied.headers
        actual = await client.get(url(gw, "/api"), headers={"origin": "https://x.example.org"})
        assert actual.headers["access-control-allow-origin"] == "https://x.example.org"
        assert actual.headers["access-control-expose-headers"] == "x-request-id"
        other = await client.get(url(gw, "/api"), headers={"origin": "https://evil.test"})
        assert "access-control-allow-origin" not in other.headers
    assert [r.method for r in gw.upstream.requests] == ["GET", "GET"]


async def test_rbac_denies_matching_requests(gw):
    async with httpx.AsyncClient() as client:
        assert (await client.get(url(gw, "/admin/users"))).status_code == 403
        guest_delete = await client.delete(url(gw, "/items/1"), headers={"x-role": "guest"})
        assert guest_delete.status_code == 403
        owner_delete = await client.delete(url(gw, "/items/1"), headers={"x-role": "owner"})
        assert owner_delete.status_code == 200
    assert gw.stats.value("http.edge.rbac.denied") == 2


def test_filter_override_errors_name_their_path():
    from gateway import ConfigError, loads_config

    overrides = {"nope": {"disabled": True}, "rate": {"config": {"max_tokens": "many"}}}
    routes = [route("/x", cluster="backend", http_filters=overrides)]
    with pytest.raises(ConfigError) as info:
        loads_config(proxy_config(1, http_filters=FILTERS, routes=routes).toml())
    assert info.value.errors == [
        "virtual_hosts.main.routes[0].http_filters.nope: no http filter named 'nope'",
        "virtual_hosts.main.routes[0].http_filters.rate.config.max_tokens: expected int, "
        "got 'many'",
    ]


async def test_compressor_streams_gzip(nursery):
    import gzip
    import zlib

    up = await start_upstream(nursery)
    gzip_filter = {"type": "compressor", "content_types": ["application/json"]}
    async with (
        run_gateway(proxy_config(up.port, http_filters={"gzip": gzip_filter})) as gw,
        httpx.AsyncClient() as client,
    ):
        r = await client.get(url(gw, "/json"), headers={"accept-encoding": "gzip"})
        assert r.headers["content-encoding"] == "gzip"
        assert "content-length" not in r.headers or int(r.headers["content-length"]) == len(
            r.content
        )
        assert r.json()["path"] == "/json"  # httpx decoded it: the gzip stream is whole
        plain = await client.get(url(gw, "/json"), headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        # A big streamed body (not in the content types list: /big has none) passes as is,
        # and a streamed JSON body decompresses chunk by chunk to the same bytes.
        async with client.stream(
            "GET", url(gw, "/json-stream"), headers={"accept-encoding": "gzip"}
        ) as s:
            raw = b"".join([c async for c in s.aiter_raw()])
        assert zlib.decompress(raw, 16 + zlib.MAX_WBITS) == gzip.decompress(raw)
    assert gw.stats.value("http.edge.gzip.compressed") == 2


async def test_ext_authz_allows_denies_and_fails_closed(nursery):
    from gateway.admin.asgi import complete_lifespan
    from tests.helpers import serve_asgi

    async def authz(scope, receive, send):
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
            return
        path = scope["path"]
        if path.endswith("/slow"):
            await trio.sleep(1)
        if "/allow" in path and dict(scope["headers"]).get(b"authorization") == b"Bearer ok":
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"x-auth-user", b"alice"), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
        else:
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-length", b"9"), (b"www-authenticate", b"Basic")],
                }
            )
            await send({"type": "http.response.body", "body": "go away\u00e9".encode()})

    authz_port = await serve_asgi(nursery, authz)
    up = await start_upstream(nursery)
    authz_filter = {
        "type": "ext_authz",
        "cluster": "authz",
        "path_prefix": "/check",
        "headers_to_add": ["x-auth-user"],
        "timeout": "300ms",
    }
    config = proxy_config(up.port, http_filters={"authz": authz_filter})
    config.cluster("authz", authz_port)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        ok = await client.get(url(gw, "/allow/me"), headers={"authorization": "Bearer ok"})
        assert ok.status_code == 200
        assert ok.json()["headers"]["x-auth-user"] == "alice"
        denied = await client.get(url(gw, "/allow/me"), headers={"authorization": "Bearer no"})
        assert (denied.status_code, denied.text) == (401, "go away\u00e9")
        assert denied.headers["www-authenticate"] == "Basic"
        slow = await client.get(url(gw, "/allow/slow"), headers={"authorization": "Bearer ok"})
        assert slow.status_code == 403
    config.cluster("authz", 1)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        down = await client.get(url(gw, "/allow/me"), headers={"authorization": "Bearer ok"})
        assert down.status_code == 403  # the service is down: fail closed
    assert [r.path for r in up.requests] == ["/allow/me"]
    assert gw.stats.value("http.edge.authz.error") == 1


def _rsa_key():
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwks(key, kid: str) -> dict:
    import json

    from jwt.algorithms import RSAAlgorithm

    jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return {"keys": [jwk]}


def _token(key, kid: str, **claims) -> str:
    import time as time_module

    import jwt

    payload = {
        "iss": "https://auth.test",
        "aud": "api",
        "sub": "alice",
        "exp": int(time_module.time()) + 60,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


async def test_jwt_authn_local_and_remote_jwks(nursery, tmp_path):
    import json

    from gateway.admin.asgi import complete_lifespan
    from tests.helpers import serve_asgi

    key, other = _rsa_key(), _rsa_key()
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(_jwks(key, "k1")))
    remote_key = _rsa_key()
    remote_body = json.dumps(_jwks(remote_key, "r1")).encode()

    async def jwks_app(scope, receive, send):
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": remote_body})

    jwks_port = await serve_asgi(nursery, jwks_app)
    up = await start_upstream(nursery)
    remote_jwks = {"cluster": "auth", "path": "/.well-known/jwks.json"}
    jwt_filters = {
        "jwt": {
            "type": "jwt_authn",
            "issuer": "https://auth.test",
            "audiences": ["api"],
            "algorithms": ["RS256"],
            "local_jwks": {"path": str(jwks_file)},
            "claims_to_headers": {"sub": "x-jwt-sub"},
        },
        "remote_jwt": {"type": "jwt_authn", "algorithms": ["RS256"], "remote_jwks": remote_jwks},
    }
    # /remote turns the local-JWKS filter off and gives the remote one its config; the
    # virtual host turns the remote one off everywhere else.
    remote_only = {
        "jwt": {"disabled": True},
        "remote_jwt": {"config": {"remote_jwks": remote_jwks}},
    }
    routes = [route("/remote", cluster="backend", http_filters=remote_only)]
    config = proxy_config(up.port, http_filters=jwt_filters, routes=routes)
    config.virtual_host("main", http_filters={"remote_jwt": {"disabled": True}})
    config.cluster("auth", jwks_port)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:

        def bearer(token: str) -> dict:
            return {"authorization": f"Bearer {token}"}

        ok = await client.get(url(gw, "/local"), headers=bearer(_token(key, "k1")))
        assert ok.status_code == 200
        assert ok.json()["headers"]["x-jwt-sub"] == "alice"
        assert "authorization" not in ok.json()["headers"]
        for bad in (
            _token(key, "k1", exp=1),  # expired
            _token(other, "k1"),  # wrong signature
            _token(key, "k1", aud="other"),  # wrong audience
            _token(key, "nope"),  # unknown kid
            "not.a.jwt",
        ):
            r = await client.get(url(gw, "/local"), headers=bearer(bad))
            assert r.status_code == 401, bad
            assert r.headers["www-authenticate"].startswith("Bearer")
        missing = await client.get(url(gw, "/local"))
        assert missing.status_code == 401
        import jwt as pyjwt

        no_sub = pyjwt.encode(
            {"iss": "https://auth.test", "aud": "api", "exp": 2**31 - 1},
            key,
            algorithm="RS256",
            headers={"kid": "k1"},
        )
        forged = await client.get(
            url(gw, "/local"), headers={**bearer(no_sub), "x-jwt-sub": "mallory"}
        )
        assert "x-jwt-sub" not in forged.json()["headers"], "claim headers come from tokens only"
        remote = await client.get(url(gw, "/remote"), headers=bearer(_token(remote_key, "r1")))
        assert remote.status_code == 200
        remote_bad = await client.get(url(gw, "/remote"), headers=bearer(_token(key, "k1")))
        assert remote_bad.status_code == 401
    assert [r.path for r in up.requests] == ["/local", "/local", "/remote"]
