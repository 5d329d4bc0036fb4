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
