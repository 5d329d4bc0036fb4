"""Route table matching without sockets."""

from gateway import loads_config
from gateway.http.headers import HeaderMap, RequestHead
from gateway.http.route_table import RouteTable

CONFIG = """
[listeners.l]
address = "127.0.0.1:0"
virtual_hosts = ["star", "prefix", "short_suffix", "long_suffix", "exact"]
[virtual_hosts.star]
domains = ["*"]
[virtual_hosts.prefix]
domains = ["api.*"]
[virtual_hosts.short_suffix]
domains = ["*.com"]
[virtual_hosts.long_suffix]
domains = ["*.example.com"]
[virtual_hosts.exact]
domains = ["api.example.com"]
[[virtual_hosts.exact.routes]]
match = { prefix = "/", headers = [{ name = "x-a", present = false }] }
direct_response = { status = 200 }
[[virtual_hosts.exact.routes]]
match = { prefix = "/", headers = [{ name = "x-a", prefix = "v", invert_match = true }] }
direct_response = { status = 201 }
[[virtual_hosts.exact.routes]]
match = { prefix = "/", query_parameters = [{ name = "flag" }] }
direct_response = { status = 202 }
"""


def table() -> RouteTable:
    config = loads_config(CONFIG)
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
