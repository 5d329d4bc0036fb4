"""Route table matching without sockets."""

from gateway import loads_config
from gateway.protocol.headers import HeaderMap, RequestHead
from gateway.router.route_table import RouteTable
from tests.config_builder import ConfigBuilder, route


def route_config() -> ConfigBuilder:
    """Listener `l` with a virtual host of each domain kind; `exact` has routes that match
    on header absence, an inverted header prefix, and a query parameter's presence."""
    vhosts = {
        "star": ["*"],
        "prefix": ["api.*"],
        "short_suffix": ["*.com"],
        "long_suffix": ["*.example.com"],
        "exact": ["api.example.com"],
    }
    config = ConfigBuilder(admin=False)
    config.listener("l", virtual_hosts=list(vhosts))
    for name, domains in vhosts.items():
        config.virtual_host(name, domains=domains)
    config.virtual_host(
        "exact",
        route(
            match={"prefix": "/", "headers": [{"name": "x-a", "present": False}]},
            direct_response={"status": 200},
        ),
        route(
            match={
                "prefix": "/",
                "headers": [{"name": "x-a", "prefix": "v", "invert_match": True}],
            },
            direct_response={"status": 201},
        ),
        route(
            match={"prefix": "/", "query_parameters": [{"name": "flag"}]},
            direct_response={"status": 202},
        ),
    )
    return config


def table() -> RouteTable:
    config = loads_config(route_config().toml())
    return RouteTable(config.listeners["l"].virtual_hosts, config)


def request(authority: str, path: str = "/", **headers: str) -> RequestHead:
    return RequestHead("GET", path, authority, "http", HeaderMap(headers.items()))


def test_domain_precedence_is_envoys():
    t = table()
    assert t.virtual_host("api.example.com").name == "exact"
    assert t.virtual_host("API.Example.com:8080").name == "exact"
    assert t.virtual_host("www.example.com").name == "long_suffix"
    assert t.virtual_host("other.com").name == "short_suffix"
    assert t.virtual_host("api.internal").name == "prefix"
    assert t.virtual_host("[::1]:80").name == "star"
    assert t.virtual_host("example.com").name == "short_suffix"


def test_header_matchers_and_order():
    t = table()
    assert t.route(request("api.example.com")).config.direct_response.status == 200
    assert t.route(request("api.example.com", **{"x-a": "w"})).config.direct_response.status == 201
    r = t.route(request("api.example.com", "/?flag", **{"x-a": "v1"}))
    assert r.config.direct_response.status == 202
    assert t.route(request("api.example.com", "/", **{"x-a": "v1"})) is None


def test_domain_match_names_the_pattern_the_lookup_used():
    t = table()
    found = {a: t.domain_match(a) for a in ("API.example.com:80", "www.example.com", "x.org")}
    assert [(m.pattern, m.kind, m.virtual_host.name) for m in found.values()] == [
        ("api.example.com", "exact", "exact"),
        ("*.example.com", "suffix", "long_suffix"),
        ("*", "default", "star"),
    ]
    assert t.domain_match("api.internal").pattern == "api.*"


#: Routes with one condition each, of every kind /explain has a reason for.
MATCHES = [
    {"prefix": "/a"},
    {"prefix": "/A", "case_sensitive": False},
    {"path": "/a/b"},
    {"path": "/A/B", "case_sensitive": False},
    {"regex": "/a/[0-9]+"},
    {"connect_matcher": True},
    {"prefix": "/", "grpc": True},
    *(
        {"prefix": "/", "headers": [{"name": "x-h", **kind, "invert_match": invert}]}
        for kind in (
            {"exact": "v"},
            {"prefix": "v"},
            {"suffix": "v"},
            {"contains": "v"},
            {"regex": "v+"},
            {"present": True},
            {"present": False},
            {},
        )
        for invert in (False, True)
    ),
    *(
        {"prefix": "/", "query_parameters": [{"name": "q", **kind}]}
        for kind in ({"exact": "1"}, {"regex": "[0-9]"}, {"present": True}, {"present": False}, {})
    ),
]


def test_mismatch_gives_a_reason_exactly_when_matches_says_no():
    """The twins agree on every route and request here: `mismatch` is what /explain shows
    for a route `matches` (the data path) passed over."""
    config = ConfigBuilder(admin=False)
    config.listener("l", virtual_hosts=["v"])
    config.virtual_host("v", *(route(match=m, direct_response={"status": 200}) for m in MATCHES))
    loaded = loads_config(config.toml())
    entries = RouteTable(["v"], loaded).entries()
    requests = [
        RequestHead(method, path, "h", "http", HeaderMap(headers))
        for method in ("GET", "CONNECT")
        for path in ("/a", "/a/b", "/A/B", "/a/12", "*", "/b?q=1", "/b?q=x", "/b?r")
        for headers in (
            [],
            [("x-h", "v")],
            [("x-h", "vvv")],
            [("x-h", "nope")],
            [("x-h", "v"), ("x-h", "w")],
            [("content-type", "application/grpc")],
        )
    ]
    requests.append(RequestHead("CONNECT", "/a", "h", "http", HeaderMap(), upgrade="websocket"))
    verdicts = set()
    for entry in entries:
        for req in requests:
            why = entry.mismatch(req)
            assert (why is None) == entry.matches(req), (entry.config.match, req, why)
            verdicts.add(why is None)
    assert verdicts == {True, False}


def test_mismatch_reasons():
    config = ConfigBuilder(admin=False)
    config.listener("l", virtual_hosts=["v"])
    config.virtual_host("v", *(route(match=m, direct_response={"status": 200}) for m in MATCHES))
    entries = RouteTable(["v"], loads_config(config.toml())).entries()

    def why(index: int, path: str = "/zzz", method: str = "GET", **headers: str) -> str | None:
        req = RequestHead(method, path, "h", "http", HeaderMap(headers.items()))
        return entries[index].mismatch(req)

    assert why(0) == "path '/zzz' does not start with prefix '/a'"
    assert why(1) == "path '/zzz' does not start with prefix '/A' (ignoring case)"
    assert why(3) == "path '/zzz' is not '/A/B' (ignoring case)"
    assert why(4) == "path '/zzz' does not match regex '/a/[0-9]+'"
    assert why(5) == "connect_matcher: only CONNECT requests match, not GET"
    assert why(0, "/a", "CONNECT") == "CONNECT requests match connect_matcher routes only"
    assert why(6) == "grpc: only gRPC requests match (content-type is None)"
    assert why(7, **{"x-h": "w"}) == "header 'x-h' must be exact 'v': it is 'w'"
    assert why(8, **{"x-h": "v"}) == "header 'x-h' must be not exact 'v': it is 'v'"
    assert why(17) == "header 'x-h' must be present: it is absent"
    assert why(19, **{"x-h": "v"}) == "header 'x-h' must be absent: it is 'v'"
    assert why(23, "/?q=2") == "query parameter 'q' must be exact '1': it is '2'"
    assert why(26, "/?q=2") == "query parameter 'q' must be absent: it is '2'"
