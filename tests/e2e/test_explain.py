"""/explain over real sockets (httpx against the admin endpoint of a running gateway):
each reason a route, virtual host or filter chain is or is not chosen, TLS chains by SNI
and ALPN, per-route filter overrides, hosts that health checks or outlier detection took
out, header mutations, and what the gateway then really does with the same request."""

from typing import Any

import httpx

from tests.config_builder import ConfigBuilder, Table, proxy_config, route
from tests.helpers import (
    admin_url,
    eventually,
    free_port,
    run_gateway,
    serving,
    start_upstream,
    url,
)
from tests.tls_helpers import Pki, http_get, subject_cn, tls_exchange


async def explain(client: httpx.AsyncClient, gw: Any, target: str, **params: Any) -> Any:
    """The JSON answer of /explain for `target` (params: method, header list, sni, ...)."""
    query: list[tuple[str, str]] = [("url", target)]
    for key, value in params.items():
        values = value if isinstance(value, list) else [value]
        query += [(key, v) for v in values]
    response = await client.get(admin_url(gw, "/explain"), params=query)
    assert response.status_code == 200, response.text
    return response.json()


def results(answer: Any) -> dict[str, str]:
    """Each route tried, by name: "matched" or why not."""
    return {r["name"]: r["result"] for r in answer["routes"]}


def changes(answer: Any) -> dict[str, tuple[str, str]]:
    """Request header changes by name: (action, by)."""
    return {c["name"]: (c["action"], c["by"]) for c in answer["request_headers"]["changes"]}


def routing_config(port: int) -> ConfigBuilder:
    """Virtual host `api` has a route that fails each kind of condition before `api/7`,
    which overrides a filter, mutates headers, retries and hashes; `wild` and `fallback`
    are found by wildcard domains."""
    config = ConfigBuilder()
    config.listener(
        "edge", virtual_hosts=["api", "wild", "fallback"], http_filters=["tag", "stamp"]
    )
    config.http_filter("tag", "header_mutation", request_headers_to_add={"x-tag": "listener"})
    config.http_filter("stamp", "header_mutation", request_headers_to_add={"x-stamp": "1"})
    direct = {"direct_response": {"status": 200}}
    config.virtual_host(
        "api",
        route(match={"path": "/exact"}, **direct),
        route(match={"prefix": "/ADMIN", "case_sensitive": False}, **direct),
        route(match={"regex": "/v[0-9]+/users/[0-9]+"}, **direct),
        route(match={"prefix": "/v1", "headers": [{"name": "x-canary", "exact": "1"}]}, **direct),
        route(match={"prefix": "/v1", "query_parameters": [{"name": "debug"}]}, **direct),
        route(match={"prefix": "/v1", "grpc": True}, **direct),
        route(match={"connect_matcher": True}, cluster="backend"),
        route(
            "/v1",
            cluster="backend",
            timeout="7s",
            request_headers_to_add={"x-route": "v1"},
            request_headers_to_remove=["x-secret"],
            response_headers_to_add={"x-route-answer": "yes"},
            http_filters={"tag": {"config": {"request_headers_to_add": {"x-tag": "route"}}}},
            retry_policy={"retry_on": ["5xx"], "num_retries": 2},
            hash_policy=[{"header": "x-user"}],
        ),
        route("/v2", **direct),
        route("/ws", cluster="backend", upgrade=["websocket"]),
        domains=["api.example.com"],
        request_headers_to_add={"x-vhost": "api"},
        response_headers_to_add={"x-served-by": "gateway"},
        http_filters={"stamp": {"disabled": True}},
    )
    config.virtual_host("wild", route(**direct), domains=["*.example.com"])
    config.virtual_host("fallback", route("/only", direct_response={"status": 204}), domains=["*"])
    config.cluster("backend", port, lb_policy="ring_hash")
    return config


async def test_each_route_before_the_match_says_why_and_the_data_path_agrees(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(routing_config(up.port)) as gw, httpx.AsyncClient() as client:
        headers = ["x-user:alice", "x-secret:s", "connection:x-hop", "x-hop:1"]
        answer = await explain(client, gw, "http://api.example.com/v1/things", header=headers)
        assert answer["listener"]["name"] == "edge"
        assert answer["virtual_host"]["why"] == "exact domain 'api.example.com'"
        assert results(answer) == {
            "api/0": "path '/v1/things' is not '/exact'",
            "api/1": "path '/v1/things' does not start with prefix '/ADMIN' (ignoring case)",
            "api/2": "path '/v1/things' does not match regex '/v[0-9]+/users/[0-9]+'",
            "api/3": "header 'x-canary' must be exact '1': it is absent",
            "api/4": "query parameter 'debug' must be present: it is absent",
            "api/5": "grpc: only gRPC requests match (content-type is None)",
            "api/6": "connect_matcher: only CONNECT requests match, not GET",
            "api/7": "matched",
        }
        assert answer["route"] == "api/7" and answer["routes_not_tried"] == 2
        # Per-route and virtual host filter overrides.
        filters = {f["name"]: f for f in answer["http_filters"]}
        assert filters["tag"]["status"] == "reconfigured by the route"
        assert filters["tag"]["config"] == {"request_headers_to_add": {"x-tag": "route"}}
        assert filters["stamp"]["status"] == "disabled by the virtual host"
        assert list(filters) == ["tag", "stamp", "router"]
        # Header mutations: the HCM's (hop-by-hop, edge headers), then the router's.
        assert changes(answer) == {
            "connection": ("removed", "connection manager"),
            "x-hop": ("removed", "connection manager"),
            "x-forwarded-for": ("added", "connection manager"),
            "x-forwarded-proto": ("added", "connection manager"),
            "x-request-id": ("added", "connection manager"),
            "x-secret": ("removed", "route"),
            "x-vhost": ("added", "virtual host"),
            "x-route": ("added", "route"),
            "x-envoy-attempt-count": ("added", "router"),
        }
        response_adds = {a["name"]: a["by"] for a in answer["response_headers"]["add"]}
        assert response_adds == {"x-served-by": "virtual host", "x-route-answer": "route"}
        assert answer["timeout"] == {"route": "7s", "upstream": "7s"}
        assert answer["retry_policy"]["num_retries"] == 2
        assert answer["hash_policy"]["hash"] is not None
        (cluster,) = answer["clusters"]
        assert cluster["hash_picks"] == f"127.0.0.1:{up.port}"
        assert answer["verdict"].startswith("proxied to cluster backend (1 of 1 hosts")

        # The data path does what explain said: the same request, through the gateway.
        sent = dict(h.split(":", 1) for h in headers)
        real = await client.get(url(gw, "/v1/things"), headers={**sent, "host": "api.example.com"})
        seen = up.requests[-1].headers
        predicted = dict(answer["request_headers"]["upstream"]["headers"])
        for name in predicted.keys() - {"x-request-id"}:
            assert seen[name] == predicted[name], name
        assert not {"x-secret", "x-hop", "connection"} & seen.keys()
        assert seen["x-tag"] == "route" and "x-stamp" not in seen  # the filters, as listed
        assert real.headers["x-served-by"] == "gateway"


async def test_virtual_host_domains_connect_and_no_route(nursery):
    up = await start_upstream(nursery)
    async with run_gateway(routing_config(up.port)) as gw, httpx.AsyncClient() as client:
        wild = await explain(client, gw, "http://shop.example.com/")
        assert wild["virtual_host"]["name"] == "wild"
        assert "wildcard domain '*.example.com'" in wild["virtual_host"]["why"]
        other = await explain(client, gw, "http://other.test/only")
        assert other["virtual_host"]["why"] == "domain '*': no other domain matches"
        assert other["verdict"] == "direct response 204 from the gateway"
        ported = await explain(client, gw, "http://API.example.com:8080/v2/x")
        assert (
            ported["virtual_host"]["why"] == "exact domain 'api.example.com' (the port is ignored)"
        )
        assert ported["listener"]["why"].startswith("the only listener")
        none = await explain(client, gw, "http://other.test/elsewhere")
        assert none["verdict"] == (
            "404 (NR): http.edge.no_route: no route of virtual host fallback matches"
        )
        assert results(none) == {
            "fallback/0": "path '/elsewhere' does not start with prefix '/only'"
        }
        connect = await explain(client, gw, "http://api.example.com:443/", method="CONNECT")
        assert results(connect)["api/0"] == "CONNECT requests match connect_matcher routes only"
        assert connect["route"] == "api/6"
        assert connect["action"] == {"type": "connect", "cluster": "backend"}
        # A header that does match, and one the query parameter route wants.
        canary = await explain(client, gw, "http://api.example.com/v1?debug=1", header="x-canary:2")
        assert results(canary)["api/3"] == "header 'x-canary' must be exact '1': it is '2'"
        assert canary["route"] == "api/4"
        # WebSocket: tunnelled where the route allows it, else forwarded without Upgrade.
        tunnel = await explain(client, gw, "ws://api.example.com/ws")
        assert tunnel["upgrade"]["result"] == "tunnelled (HTTP/1.1 upstream)"
        assert tunnel["verdict"].startswith("tunnelled to cluster backend")
        upgraded = changes(tunnel)
        assert upgraded["upgrade"] == ("added", "router") and "sec-websocket-key" in upgraded
        plain = await explain(client, gw, "ws://api.example.com/v1/chat")
        assert plain["upgrade"]["result"].startswith("not allowed here: forwarded")
        assert "upgrade" not in dict(plain["request_headers"]["upstream"]["headers"])
        # Path normalisation comes first, as in the HCM.
        dotted = await explain(client, gw, "http://api.example.com/v2/../v1/a")
        assert dotted["path_normalization"] == {"from": "/v2/../v1/a", "to": "/v1/a"}
        assert dotted["route"] == "api/7"


def tls_config(pki: Pki) -> ConfigBuilder:
    """Listener `edge` chooses among four chains: `api` by exact SNI, `grpc` by a wildcard
    SNI with ALPN h2 offered, `wild` by the same wildcard, `plain` for cleartext."""
    api = pki.issue("api.example.com", common_name="api")
    wild = pki.issue("*.example.com", common_name="wild")
    hcm = {"type": "http_connection_manager", "virtual_hosts": ["main"]}
    config = ConfigBuilder()
    chains: list[tuple[str, Table, Any]] = [
        ("api", {"server_names": ["api.example.com"]}, {"certificates": [api.table()]}),
        (
            "grpc",
            {"server_names": ["*.example.com"], "application_protocols": ["h2"]},
            {"certificates": [wild.table()]},
        ),
        (
            "wild",
            {"server_names": ["*.example.com"]},
            {"certificates": [wild.table()], "alpn_protocols": ["http/1.1"]},
        ),
        ("plain", {"transport_protocol": "raw_buffer"}, None),
    ]
    for name, match, tls in chains:
        chain = {"name": name, "filter_chain_match": match, "filters": [hcm]}
        config.filter_chain(**chain, **({"tls": tls} if tls else {}))
    config.virtual_host("main", route(direct_response={"status": 200, "body": "ok"}))
    return config


async def test_filter_chain_by_sni_and_alpn_as_the_handshake_chooses(tmp_path):
    pki = Pki(tmp_path)
    async with run_gateway(tls_config(pki)) as gw, httpx.AsyncClient() as client:
        port = gw.listener_ports["edge"]
        api = await explain(client, gw, f"https://api.example.com:{port}/")
        assert api["listener"]["why"] == f"bound to port {port}, the URL's"
        assert api["filter_chain"]["name"] == "api"
        assert (
            api["filter_chain"]["why"] == "server_names ['api.example.com'] meets 'api.example.com'"
        )
        candidates = {c["name"]: c["result"] for c in api["filter_chain"]["candidates"]}
        assert candidates == {
            "grpc": "server_names: another chain matches more specifically",
            "wild": "server_names: another chain matches more specifically",
            "plain": "server_names: another chain matches more specifically",
        }
        assert api["tls"]["certificate_names"] == ["api.example.com"]
        assert api["tls"]["alpn"] == "h2"
        assert api["downstream_protocol"] == {"protocol": "HTTP/2", "why": "ALPN h2"}
        real = await tls_exchange(
            port, "api.example.com", pki.client_context(["h2"]), b"", timeout=0.1
        )
        assert subject_cn(real.peer_cert) == "api" and real.alpn == "h2"

        h2 = await explain(client, gw, "https://www.example.com/", listener="edge")
        assert h2["filter_chain"]["name"] == "grpc"
        candidates = {c["name"]: c["result"] for c in h2["filter_chain"]["candidates"]}
        assert (
            candidates["api"] == "server_names ['api.example.com'] does not match 'www.example.com'"
        )
        assert (
            candidates["wild"] == "application_protocols: another chain matches more specifically"
        )

        h1 = await explain(client, gw, "https://www.example.com/", listener="edge", alpn="http/1.1")
        assert h1["filter_chain"]["name"] == "wild"
        candidates = {c["name"]: c["result"] for c in h1["filter_chain"]["candidates"]}
        assert candidates["grpc"] == "application_protocols ['h2'] does not match ['http/1.1']"
        assert h1["tls"]["alpn"] == "http/1.1"
        assert h1["downstream_protocol"]["protocol"] == "HTTP/1.1"
        real = await tls_exchange(
            port, "www.example.com", pki.client_context(["http/1.1"]), http_get()
        )
        assert subject_cn(real.peer_cert) == "wild" and real.alpn == "http/1.1"
        assert real.response.endswith(b"ok")

        plain = await explain(client, gw, f"http://www.example.com:{port}/")
        assert plain["filter_chain"]["name"] == "plain"
        assert plain["filter_chain"]["why"] == "transport_protocol 'raw_buffer' meets 'raw_buffer'"

        by_sni = await explain(client, gw, f"https://127.0.0.1:{port}/", sni="api.example.com")
        assert by_sni["filter_chain"]["name"] == "api"
        no_sni = await explain(client, gw, f"https://127.0.0.1:{port}/")
        assert no_sni["verdict"] == (
            "connection closed: no filter chain matches (listener.edge.no_filter_chain_match)"
        )
        candidates = {c["name"]: c["result"] for c in no_sni["filter_chain"]["candidates"]}
        assert candidates["api"] == "server_names ['api.example.com'] does not match none"
        assert candidates["plain"] == "transport_protocol 'raw_buffer' does not match 'tls'"


async def test_hosts_out_of_the_load_balancer_are_shown_so(nursery):
    """A host that fails its health check, a host that outlier detection ejected, and a
    cluster whose only host is down (panic mode off): each as the load balancer sees it."""
    good, flaky = await start_upstream(nursery), await start_upstream(nursery)
    dead = free_port()
    config = ConfigBuilder()
    config.listener("edge", virtual_hosts=["main"])
    config.virtual_host(
        "main",
        route("/checked", cluster="checked"),
        route("/flaky/", cluster="flaky", prefix_rewrite="/"),
        route("/dead", cluster="dead"),
        route(
            "/split",
            weighted_clusters=[{"name": "checked", "weight": 3}, {"name": "dead", "weight": 1}],
        ),
    )
    check = {"type": "http", "path": "/", "interval": "10s", "timeout": "1s"}
    config.cluster("checked", good.port, dead, health_checks=[check])
    config.cluster(
        "flaky",
        good.port,
        flaky.port,
        outlier_detection={"consecutive_5xx": 1, "base_ejection_time": "60s"},
    )
    config.cluster("dead", dead, health_checks=[check], healthy_panic_threshold=0)
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        checked = await explain(client, gw, "http://x/checked")
        hosts = {h["address"]: h for h in checked["clusters"][0]["hosts"]}
        assert hosts[f"127.0.0.1:{dead}"]["health"] == "/failed_active_hc"
        assert hosts[f"127.0.0.1:{dead}"]["can_be_picked"] is False
        assert hosts[f"127.0.0.1:{good.port}"]["health"] == "healthy"
        assert hosts[f"127.0.0.1:{good.port}"]["can_be_picked"] is True
        assert checked["verdict"].startswith("proxied to cluster checked (1 of 2 hosts")

        # A 5xx ejects whichever host answered it (consecutive_5xx = 1).
        assert (await client.get(url(gw, "/flaky/status/500"))).status_code == 500
        await eventually(
            lambda: gw.stats.value("cluster.flaky.outlier_detection.ejections_active") == 1
        )
        flaky_answer = await explain(client, gw, "http://x/flaky/")
        (ejected,) = [h for h in flaky_answer["clusters"][0]["hosts"] if "ejected" in h]
        assert ejected["health"] == "/failed_outlier_check"
        assert ejected["can_be_picked"] is False
        left, _, rest = ejected["ejected"].removeprefix("for ").partition("s more")
        assert 50 < float(left) <= 60 and rest == " (ejection #1)"

        down = await explain(client, gw, "http://x/dead")
        assert down["verdict"].startswith("503 (UH or NC): no host to pick in cluster dead")

        split = await explain(client, gw, "http://x/split")
        assert split["action"]["clusters"] == [
            {"name": "checked", "weight": 3, "share": "75%"},
            {"name": "dead", "weight": 1, "share": "25%"},
        ]
        assert [c["can_be_picked"] for c in split["clusters"]] == [1, 0]
        text = await client.get(
            admin_url(gw, "/explain"), params={"url": "http://x/flaky/", "format": "text"}
        )
        assert "/failed_outlier_check" in text.text and "cannot be picked" in text.text
        assert text.text.splitlines()[-1].startswith("verdict         proxied to cluster flaky")


#: Questions /explain refuses, each with the start of its one-line answer.
BAD_QUESTIONS: list[tuple[dict[str, str], str]] = [
    ({}, "explain: url= is required, e.g. url=https://api.example.com/v1/x"),
    ({"url": "ftp://x/"}, "explain: bad url 'ftp://x/': the scheme must be http, https, ws or wss"),
    ({"url": "http://x:99999/"}, "explain: bad url 'http://x:99999/': Port out of range 0-65535"),
    ({"url": "http:///nohost"}, "explain: bad url 'http:///nohost': it has no host"),
    ({"url": "http://x/", "method": "BREW"}, "explain: unknown method 'BREW'; use one of "),
    ({"url": "http://x/", "header": "no-colon"}, "explain: header= must be NAME:VALUE"),
    ({"url": "http://x/", "source": "nowhere"}, "explain: source= must be IP:PORT"),
    ({"url": "http://x/", "sni": "a"}, "explain: sni= and alpn= are TLS"),
    ({"url": "http://x/", "verbose": "1"}, "explain: unknown parameter 'verbose'"),
    ({"url": "http://x/", "format": "yaml"}, "explain: format= must be json or text"),
    ({"url": "http://x/", "listener": "nope"}, "explain: no listener named 'nope'; listeners: "),
    ({"url": "http://x:1/"}, "explain: no listener is bound to port 1: give listener=NAME"),
]


async def test_bad_questions_get_one_line():
    config = routing_config(1)
    config.listener("other", virtual_hosts=["fallback"])
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        for params, reason in BAD_QUESTIONS:
            response = await client.get(admin_url(gw, "/explain"), params=params)
            assert response.status_code == 400, params
            assert response.text.startswith(reason), (params, response.text)
            assert response.text.count("\n") == 1


async def test_the_admin_host_and_origin_rules_apply():
    """A read like /tasks: a page rebound to the admin's address is refused by its Host; a
    foreign page's POST is refused by its Origin, its GET answered (it cannot read it)."""
    async with run_gateway(routing_config(1)) as gw, httpx.AsyncClient() as client:
        target = admin_url(gw, "/explain?url=http://x/")
        assert (await client.get(target, headers={"host": "rebound.example"})).status_code == 403
        foreign = {"origin": "http://evil.example"}
        assert (await client.post(target, headers=foreign)).status_code == 403
        assert (await client.get(target, headers=foreign)).status_code == 200


async def test_under_a_supervisor_worker_0_answers_with_every_header(nursery, tmp_path):
    """The supervisor passes the query on as the client wrote it: `header=` twice stays
    twice (a dict of the query kept only the last)."""
    up = await start_upstream(nursery)
    canary = route(
        match={"prefix": "/", "headers": [{"name": "x-a", "present": True}]},
        direct_response={"status": 201},
    )
    config = proxy_config(up.port, routes=[canary])
    config.server(workers=2)
    path = tmp_path / "g.toml"
    path.write_text(config.toml())
    started = "gateway.workers: gateway started"
    async with serving(path, started) as served, httpx.AsyncClient() as client:
        admin = int(served.line.split("admin ")[1].split(",")[0])
        query = [("url", "http://x/"), ("header", "x-a:1"), ("header", "x-b:2")]
        answer = (await client.get(f"http://127.0.0.1:{admin}/explain", params=query)).json()
        assert answer["worker"] == 0
        assert answer["request"]["headers"] == [["x-a", "1"], ["x-b", "2"]]
        assert answer["route"] == "main/0"
        text = await client.get(
            f"http://127.0.0.1:{admin}/explain", params=[*query, ("format", "text")]
        )
        assert "worker          0 (each worker checks the health of its hosts itself)" in text.text


async def test_a_per_route_filter_left_out_where_it_has_nothing_to_do(nursery):
    """`ratelimit` is built per route and left out of the chains of routes without
    `rate_limits`: /explain reads the chain the connection manager built for the route."""
    up = await start_upstream(nursery)
    config = ConfigBuilder()
    config.listener("edge", virtual_hosts=["main"], http_filters=["limit"])
    config.http_filter("limit", "ratelimit", domain="edge", rate_limit_service={"cluster": "rls"})
    limits = [{"actions": [{"generic_key": {"descriptor_value": "orders"}}]}]
    config.virtual_host(
        "main",
        route("/limited", cluster="backend", rate_limits=limits),
        route("/free", cluster="backend"),
    )
    config.cluster("backend", up.port)
    config.cluster("rls", free_port(), protocol="http2")
    async with run_gateway(config) as gw, httpx.AsyncClient() as client:
        limited = await explain(client, gw, "http://x/limited")
        assert limited["http_filters"][0]["status"] == "runs"
        free = await explain(client, gw, "http://x/free")
        assert free["http_filters"][0]["status"] == "left out: it has nothing to do on this route"
