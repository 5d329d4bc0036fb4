"""Virtual hosts, route matching and route actions, through real sockets."""

import httpx
import pytest

from tests.config_builder import ConfigBuilder, proxy_config, route
from tests.helpers import eventually, run_gateway, start_upstream, url


def routing_config(a: int, b: int) -> ConfigBuilder:
    """Virtual hosts of each domain kind, with routes of every match kind and action, to
    clusters `a` and `b` (upstreams on ports `a` and `b`)."""
    config = ConfigBuilder(admin=False)
    config.listener(virtual_hosts=["exact", "suffix", "prefix", "fallback"])
    config.virtual_host(
        "exact",
        route(
            "/v1/",
            cluster="a",
            prefix_rewrite="/",
            request_headers_to_add={"x-route": "v1"},
            request_headers_to_remove=["x-drop"],
            response_headers_to_add={"x-route-resp": "v1"},
            response_headers_to_remove=["x-upstream"],
        ),
        route(match={"path": "/exact"}, cluster="b"),
        route(match={"regex": "/items/[0-9]+"}, cluster="b"),
        route(
            match={"prefix": "/h", "headers": [{"name": "x-canary", "exact": "yes"}]}, cluster="b"
        ),
        route(
            match={"prefix": "/q", "query_parameters": [{"name": "debug", "exact": "1"}]},
            cluster="b",
        ),
        route(match={"prefix": "/CaSe", "case_sensitive": False}, cluster="b"),
        route("/rewrite-host", cluster="a", host_rewrite="internal.svc"),
        route("/old", redirect={"path_redirect": "/new", "response_code": 308}),
        route("/secure", redirect={"https_redirect": True}),
        route(
            "/weighted", weighted_clusters=[{"name": "a", "weight": 1}, {"name": "b", "weight": 3}]
        ),
        route(cluster="a"),
        domains=["api.example.com"],
        request_headers_to_add={"x-vhost": "exact"},
        response_headers_to_add={"x-vhost-resp": "exact"},
    )
    config.virtual_host(
        "suffix",
        route(
            direct_response={"status": 200, "body": "suffix"},
            response_headers_to_add={"x-route": "direct"},
        ),
        domains=["*.example.com"],
        response_headers_to_add={"x-vhost": "suffix"},
    )
    config.virtual_host(
        "prefix", route(direct_response={"status": 200, "body": "prefix"}), domains=["internal.*"]
    )
    config.virtual_host(
        "fallback",
        route(match={"path": "/only-this"}, direct_response={"status": 201, "body": "fallback"}),
    )
    config.cluster("a", a)
    config.cluster("b", b)
    return config


@pytest.fixture
async def routed(nursery):
    a = await start_upstream(nursery, "a")
    b = await start_upstream(nursery, "b")
    async with (
        run_gateway(routing_config(a.port, b.port)) as gw,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gw.listener_ports['edge']}",
            headers={"host": "api.example.com"},
        ) as client,
    ):
        yield gw, client


async def test_virtual_host_selection_order(routed):
    _, client = routed
    r = await client.get("/", headers={"host": "api.example.com:10000"})
    assert r.json()["server"] == "a"
    direct = await client.get("/", headers={"host": "www.example.com"})
    assert direct.text == "suffix"
    assert (direct.headers["x-vhost"], direct.headers["x-route"]) == ("suffix", "direct")
    assert (await client.get("/", headers={"host": "internal.corp"})).text == "prefix"
    other = await client.get("/only-this", headers={"host": "other.org"})
    assert (other.status_code, other.text) == (201, "fallback")


async def test_no_route_is_404_with_nr_flag(routed):
    gw, client = routed
    r = await client.get("/missing", headers={"host": "other.org"})
    assert r.status_code == 404
    await eventually(lambda: gw.stats.value("http.edge.no_route") == 1)


async def test_prefix_rewrite_and_header_mutations(routed):
    _, client = routed
    r = await client.get("/v1/users?id=7", headers={"x-drop": "secret"})
    seen = r.json()
    assert seen["path"] == "/users?id=7"
    assert seen["headers"]["x-vhost"] == "exact"
    assert seen["headers"]["x-route"] == "v1"
    assert "x-drop" not in seen["headers"]
    assert r.headers["x-route-resp"] == "v1"
    assert r.headers["x-vhost-resp"] == "exact"
    assert "x-upstream" not in r.headers


async def test_path_regex_header_query_and_case_matches(routed):
    _, client = routed
    assert (await client.get("/exact")).json()["server"] == "b"
    assert (await client.get("/exact/more")).json()["server"] == "a"
    assert (await client.get("/items/42")).json()["server"] == "b"
    assert (await client.get("/items/x42")).json()["server"] == "a"
    assert (await client.get("/h", headers={"x-canary": "yes"})).json()["server"] == "b"
    assert (await client.get("/h", headers={"x-canary": "no"})).json()["server"] == "a"
    assert (await client.get("/q?debug=1")).json()["server"] == "b"
    assert (await client.get("/q?debug=0")).json()["server"] == "a"
    assert (await client.get("/case/x")).json()["server"] == "b"


async def test_host_rewrite(routed):
    _, client = routed
    r = await client.get("/rewrite-host")
    assert r.json()["headers"]["host"] == "internal.svc"


async def test_redirects(routed):
    _, client = routed
    r = await client.get("/old?x=1")
    assert r.status_code == 308
    assert r.headers["location"] == "http://api.example.com/new?x=1"
    r = await client.get("/secure/page", headers={"host": "api.example.com:8080"})
    assert r.status_code == 301
    assert r.headers["location"] == "https://api.example.com/secure/page"


async def test_weighted_clusters_split_traffic(routed):
    _, client = routed
    servers = [(await client.get("/weighted")).json()["server"] for _ in range(200)]
    share_b = servers.count("b") / len(servers)
    assert 0.6 < share_b < 0.9, share_b


async def test_round_robin_across_endpoints(nursery):
    ups = [await start_upstream(nursery, f"u{i}") for i in range(3)]
    async with (
        run_gateway(proxy_config(*(u.port for u in ups))) as gw,
        httpx.AsyncClient() as client,
    ):
        servers = [(await client.get(url(gw, "/"))).json()["server"] for _ in range(9)]
    assert sorted(servers) == sorted(["u0", "u1", "u2"] * 3)
