"""ext_authz's gRPC mode and the ratelimit filter without sockets: their config (the docs'
examples, and every error with its TOML path), which routes' chains the ratelimit filter
joins, and the header edits of an authorization service's answer."""

import pytest

from gateway.clusters.manager import ClusterManager
from gateway.config.load import loads_config
from gateway.http.conn_manager import HttpConnectionManager
from gateway.http.filters.authz_verdict import HeaderEdit, UnusableAnswer, apply_edits
from gateway.http.filters.ext_authz import ExtAuthzConfig
from gateway.http.filters.ratelimit import RateLimitConfig
from gateway.listeners.filter_chain import listener_hcm
from gateway.observability.stats import StatsStore
from gateway.protocol.headers import HeaderMap
from gateway.server.overload import OverloadManager
from gateway.server.state import ServerState
from tests.unit.test_config import docs_example, errors_of

BASE = """
[listeners.edge]
address = "127.0.0.1:10000"
virtual_hosts = ["api"]
http_filters = ["f"]

[virtual_hosts.api]
domains = ["*"]

[[virtual_hosts.api.routes]]
match = { prefix = "/" }
cluster = "api"

[clusters.api]
endpoints = ["127.0.0.1:8080"]

[clusters.grpc]
endpoints = ["127.0.0.1:8081"]
protocol = "http2"
"""


RATE = 'type = "ratelimit"\ndomain = "edge"\nrate_limit_service = { cluster = "grpc" }\n'


def with_filter(table: str) -> str:
    return BASE + "\n[http_filters.f]\n" + table


def test_the_docs_examples_are_valid():
    http = loads_config(docs_example('path_prefix = "/check"'))
    assert http.http_filters["authz"].config == ExtAuthzConfig(
        cluster="authz",
        path_prefix="/check",
        allowed_headers=["authorization", "cookie"],
        headers_to_add=["x-auth-user"],
        timeout=0.3,
    )
    grpc = loads_config(docs_example('grpc_service = { cluster = "opa"'))
    config = grpc.http_filters["grpc_authz"].config
    assert config.grpc_service.cluster == "opa" and config.grpc_service.timeout == 0.25
    assert config.context_extensions == {"api": "public"}
    rate = loads_config(docs_example('type = "ratelimit"'))
    assert isinstance(rate.http_filters["global_rate"].config, RateLimitConfig)
    search = rate.virtual_hosts["api"].routes[0]
    assert [len(limit.actions) for limit in search.rate_limits] == [2, 1]
    assert rate.virtual_hosts["api"].rate_limits[0].actions[0].remote_address is not None


@pytest.mark.parametrize(
    ("table", "errors"),
    [
        (
            'type = "ext_authz"\n',
            [
                "http_filters.f: set exactly one of cluster (an HTTP service) and "
                "grpc_service (a gRPC one)"
            ],
        ),
        (
            'type = "ext_authz"\ncluster = "api"\ngrpc_service = { cluster = "grpc" }\n',
            [
                "http_filters.f: set exactly one of cluster (an HTTP service) and "
                "grpc_service (a gRPC one)"
            ],
        ),
        (
            'type = "ext_authz"\ngrpc_service = { cluster = "nope" }\n',
            ["http_filters.f.grpc_service.cluster: no cluster named 'nope'"],
        ),
        (
            'type = "ext_authz"\ngrpc_service = { cluster = "api" }\n',
            ["http_filters.f.grpc_service.cluster: 'api' must be an http2 cluster (gRPC)"],
        ),
        (
            'type = "ext_authz"\ngrpc_service = { cluster = "grpc" }\npath_prefix = "/x"\n'
            'timeout = "1s"\n',
            [
                "http_filters.f.path_prefix: only for an HTTP service (cluster)",
                "http_filters.f.timeout: only for an HTTP service (cluster); a gRPC one takes "
                "grpc_service.timeout",
            ],
        ),
        (
            'type = "ext_authz"\ncluster = "api"\ncontext_extensions = { a = "b" }\n',
            ["http_filters.f.context_extensions: only for a gRPC service (grpc_service)"],
        ),
        (
            'type = "ext_authz"\ngrpc_service = { cluster = "grpc", timeout = "0s" }\n',
            ["http_filters.f.grpc_service.timeout: must be at least 1ms, got 0ms"],
        ),
        (
            'type = "ext_authz"\ngrpc_service = { cluster = "grpc" }\nstatus_on_error = 99\n',
            ["http_filters.f.status_on_error: must be from 200 to 599, got 99"],
        ),
        (
            RATE + 'enable_x_ratelimit_headers = "DRAFT_VERSION_04"\n',
            [
                "http_filters.f.enable_x_ratelimit_headers: expected one of 'OFF', "
                "'DRAFT_VERSION_03', got 'DRAFT_VERSION_04'",
            ],
        ),
        (RATE + "stage = 11\n", ["http_filters.f.stage: must be from 0 to 10, got 11"]),
        (
            'type = "ratelimit"\ndomain = ""\nrate_limit_service = { cluster = "api" }\n',
            [
                "http_filters.f.domain: must not be empty",
                "http_filters.f.rate_limit_service.cluster: 'api' must be an http2 cluster (gRPC)",
            ],
        ),
        (
            'type = "ratelimit"\ndomain = "edge"\n',
            ["http_filters.f.rate_limit_service: required key is missing"],
        ),
    ],
)
def test_filter_config_errors_name_their_keys(table, errors):
    assert errors_of(with_filter(table)) == errors


def test_an_overrides_service_is_checked_under_its_path():
    text = with_filter('type = "ext_authz"\ngrpc_service = { cluster = "grpc" }\n').replace(
        'cluster = "api"\n\n[clusters.api]',
        'cluster = "api"\n'
        'http_filters = { f = { config = { grpc_service = { cluster = "gone" } } } }\n\n'
        "[clusters.api]",
    )
    assert errors_of(text) == [
        "virtual_hosts.api.routes[0].http_filters.f.config.grpc_service.cluster: "
        "no cluster named 'gone'"
    ]


def test_rate_limit_actions_are_checked():
    limits = (
        "rate_limits = ["
        "{ actions = [] }, "
        "{ actions = [{}, { remote_address = {}, source_cluster = {} }] }, "
        '{ actions = [{ request_headers = { header_name = "", descriptor_key = "k" } }] }, '
        '{ actions = [{ header_value_match = { descriptor_value = "v", headers = [] } }] }, '
        '{ actions = [{ header_value_match = { descriptor_value = "v", headers = [{ name = "a",'
        ' exact = "1", prefix = "2" }] } }] }, '
        '{ actions = [{ generic_key = { descriptor_value = "" } }], stage = 3 }'
        "]\n"
    )
    text = with_filter(RATE).replace('domains = ["*"]\n', 'domains = ["*"]\n' + limits)
    assert errors_of(text) == [
        "virtual_hosts.api.rate_limits[0].actions: needs at least one action",
        "virtual_hosts.api.rate_limits[1].actions[0]: set exactly one of request_headers, "
        "remote_address, generic_key, header_value_match, destination_cluster, source_cluster",
        "virtual_hosts.api.rate_limits[1].actions[1]: set exactly one of request_headers, "
        "remote_address, generic_key, header_value_match, destination_cluster, source_cluster, "
        "got remote_address, source_cluster",
        "virtual_hosts.api.rate_limits[2].actions[0].request_headers: header_name and "
        "descriptor_key must not be empty",
        "virtual_hosts.api.rate_limits[3].actions[0].header_value_match.headers: needs at least "
        "one matcher",
        "virtual_hosts.api.rate_limits[4].actions[0].header_value_match.headers[0]: set at "
        "most one of exact, prefix, suffix, contains, regex, present, got ['exact', 'prefix']",
        "virtual_hosts.api.rate_limits[5].actions[0].generic_key: descriptor_value and "
        "descriptor_key must not be empty",
    ]
    structural = text.replace("stage = 3", "stage = 99").replace("{ actions = [] }, ", "")
    assert "virtual_hosts.api.rate_limits[4].stage: must be from 0 to 10, got 99" in errors_of(
        structural
    )


def _chains(text: str) -> HttpConnectionManager:
    config = loads_config(text)
    store = StatsStore()
    server = ServerState(OverloadManager(config.overload, store))
    listener = listener_hcm(config.listeners["edge"])
    return HttpConnectionManager(
        "edge", listener, config, ClusterManager(config, store), store, [], server, {}
    )


def test_the_ratelimit_filter_joins_only_the_chains_of_routes_with_rate_limits():
    routes = """
[[virtual_hosts.api.routes]]
match = { prefix = "/limited" }
cluster = "api"
rate_limits = [{ actions = [{ remote_address = {} }] }]

[[virtual_hosts.api.routes]]
match = { prefix = "/later-stage" }
cluster = "api"
rate_limits = [{ stage = 1, actions = [{ remote_address = {} }] }]

[[virtual_hosts.api.routes]]
match = { prefix = "/elsewhere" }
direct_response = { status = 200 }

[[virtual_hosts.api.routes]]
match = { prefix = "/" }
cluster = "api"
"""
    text = with_filter(RATE).replace(
        '[[virtual_hosts.api.routes]]\nmatch = { prefix = "/" }\ncluster = "api"\n', routes
    )
    hcm = _chains(text)
    entries = {e.config.match.prefix: e for e in hcm.route_table.entries()}
    assert len(hcm.filters_for(entries["/limited"])) == 1
    for prefix in ("/later-stage", "/elsewhere", "/"):
        assert hcm.filters_for(entries[prefix]) == []
    assert hcm.filters_for(None) == []
    assert hcm._store.value("cluster.api.ratelimit.ok") == 0  # counted from the start
    # The virtual host's rate limits reach the routes without their own.
    limits = 'rate_limits = [{ actions = [{ generic_key = { descriptor_value = "v" } }] }]\n'
    vhost = text.replace('domains = ["*"]\n', 'domains = ["*"]\n' + limits)
    hcm = _chains(vhost)
    entries = {e.config.match.prefix: e for e in hcm.route_table.entries()}
    assert len(hcm.filters_for(entries["/"])) == 1
    assert hcm.filters_for(entries["/later-stage"]) == []  # it has its own (stage 1)


def test_header_edits_follow_envoys_header_value_option():
    headers = HeaderMap([("x-a", "1"), ("x-b", "1"), ("x-c", "1")])
    apply_edits(
        headers,
        (
            HeaderEdit("x-a", "2", "add"),
            HeaderEdit("x-b", "2", "set"),
            HeaderEdit("x-c", "2", "append"),
            HeaderEdit("x-d", "2", "append"),
            HeaderEdit("x-a", "3", "add_if_absent"),
            HeaderEdit("x-e", "2", "add_if_absent"),
            HeaderEdit("x-f", "2", "set_if_exists"),
            HeaderEdit("x-c", "3", "set_if_exists"),
        ),
    )
    assert list(headers) == [
        ("x-a", "1"),
        ("x-a", "2"),
        ("x-b", "2"),
        ("x-d", "2"),
        ("x-e", "2"),
        ("x-c", "3"),
    ]
    for name, value in (("Host", "x"), (":path", "/"), ("x-ok", "a\nb"), ("connection", "x")):
        with pytest.raises(UnusableAnswer):
            HeaderEdit.checked(name, value, "set")
    assert HeaderEdit.checked("X-Ok", "fine", "add") == HeaderEdit("x-ok", "fine", "add")
