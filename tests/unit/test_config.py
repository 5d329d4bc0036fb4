"""Config loading: every error names its TOML path, and all are reported at once."""

import re
from pathlib import Path

import pytest
import trustme

from gateway import ConfigError, loads_config
from gateway.config.load import parse_address, parse_byte_size, parse_duration
from gateway.config.model import DEFAULT_OVERLOAD_ACTIONS

VALID = """
[admin]
address = "127.0.0.1:9901"

[listeners.edge]
address = "127.0.0.1:10000"
http_filters = ["add_headers"]
virtual_hosts = ["api"]

[http_filters.add_headers]
type = "header_mutation"
request_headers_to_add = { "x-gateway" = "1" }

[virtual_hosts.api]
domains = ["api.example.com", "*.example.com", "*"]
[[virtual_hosts.api.routes]]
match = { prefix = "/v1/" }
cluster = "api"
timeout = "15s"
prefix_rewrite = "/"
[[virtual_hosts.api.routes]]
match = { path = "/healthz" }
direct_response = { status = 200, body = "ok" }

[clusters.api]
endpoints = ["127.0.0.1:8080", "127.0.0.1:8081"]
connect_timeout = "1s"
protocol = "http1"
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loads_config(text)
    return info.value.errors


def test_issue_example_is_valid():
    config = loads_config(VALID)
    assert config.listeners["edge"].address.port == 10000
    assert config.clusters["api"].connect_timeout == 1.0
    assert config.virtual_hosts["api"].routes[0].timeout == 15.0
    assert config.http_filters["add_headers"].type == "header_mutation"


def test_repo_gateway_toml_is_valid():
    from gateway import load_config

    root = Path(__file__).resolve().parents[2]
    assert load_config(root / "gateway.toml").listeners


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("1.5s", 1.5), ("2m", 120), ("1h", 3600), ("0s", 0)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["15", "1x", "-1s", "s", 15, "1.s"])
def test_bad_durations(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_addresses():
    assert (parse_address("[::1]:80").host, parse_address("[::1]:80").port) == ("::1", 80)
    assert str(parse_address("[::1]:80")) == "[::1]:80"
    assert parse_address("localhost:0").port == 0
    for bad in ("localhost", "host:99999", ":80", "host:http"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_unknown_key_suggests_the_right_one():
    text = VALID.replace('match = { prefix = "/v1/" }', 'match = { prefx = "/v1/" }')
    assert "virtual_hosts.api.routes[0].match: unknown key 'prefx' (did you mean 'prefix'?)" in (
        errors_of(text)
    )


def test_missing_cluster_reference():
    text = VALID.replace('cluster = "api"', 'cluster = "apii"')
    assert errors_of(text) == ["virtual_hosts.api.routes[0].cluster: no cluster named 'apii'"]


def test_all_structural_errors_at_once():
    text = (
        VALID.replace('connect_timeout = "1s"', 'connect_timeout = "1x"')
        .replace('"127.0.0.1:8081"', '"127.0.0.1:80810"')
        .replace('protocol = "http1"', 'protocol = "http3"\nmax_connections_per_host = 0')
        .replace('virtual_hosts = ["api"]', 'virtual_hosts = "api"')
        .replace('"x-gateway" = "1"', '"x-gateway" = 1')
    )
    errors = errors_of(text)
    assert errors == [
        "listeners.edge.virtual_hosts: expected a list, got 'api'",
        "http_filters.add_headers.request_headers_to_add.x-gateway: expected str, got 1",
        "clusters.api.endpoints[1]: expected 'host:port' (or '[::1]:port') with a port "
        "0-65535, got '127.0.0.1:80810'",
        "clusters.api.connect_timeout: expected a duration such as '250ms', '1.5s' or '2m', "
        "got '1x'",
        "clusters.api.protocol: expected one of 'http1', 'http2', got 'http3'",
    ]


def test_all_reference_errors_at_once():
    text = (
        VALID.replace('http_filters = ["add_headers"]', 'http_filters = ["nope"]').replace(
            'cluster = "api"', 'cluster = "apii"'
        )
        + '[[virtual_hosts.api.routes]]\nmatch = { prefix = "/", path = "/x" }\n'
    )
    errors = errors_of(text)
    assert "listeners.edge.http_filters[0]: no http filter named 'nope'" in errors
    assert "virtual_hosts.api.routes[0].cluster: no cluster named 'apii'" in errors
    assert (
        "virtual_hosts.api.routes[2]: set exactly one action of cluster, weighted_clusters, "
        "redirect, direct_response" in errors
    )
    assert (
        "virtual_hosts.api.routes[2].match: set exactly one of prefix, path, regex, connect_matcher"
        in errors
    )


def test_validator_errors_name_the_field():
    text = VALID.replace('protocol = "http1"', "max_connections_per_host = 0")
    assert errors_of(text) == [
        "clusters.api.max_connections_per_host: must be from 1 to 4294967295, got 0"
    ]


def test_missing_required_key():
    text = VALID.replace('endpoints = ["127.0.0.1:8080", "127.0.0.1:8081"]', "")
    assert errors_of(text) == ["clusters.api.endpoints: required key is missing"]


def test_unknown_filter_type():
    text = VALID.replace('type = "header_mutation"', 'type = "nope"')
    (error,) = errors_of(text)
    assert error.startswith("http_filters.add_headers.type: must name a filter type (buffer, ")
    assert error.endswith("got 'nope'")


def test_duplicate_listener_address():
    text = VALID + '[listeners.second]\naddress = "127.0.0.1:10000"\nvirtual_hosts = ["api"]\n'
    errors = errors_of(text)
    assert errors == ["listeners.second.address: 127.0.0.1:10000 is also used by listeners.edge"]


def test_toml_syntax_error_names_line_and_column():
    (error,) = errors_of('[admin]\naddress = "127.0.0.1:9901\n')
    assert "TOML syntax error" in error and "line 2" in error and "column" in error


@pytest.mark.parametrize(
    "text",
    [
        "a = " + "[" * 1000 + "]" * 1000,
        "a = " + "{b = " * 1000 + "1" + "}" * 1000,
        ".".join(["a"] * 2000) + " = 1",
    ],
)
def test_toml_nested_too_deeply_is_a_config_error(text):
    # Found by tests/fuzz: tomli raises RecursionError past its limits, a traceback.
    (error,) = errors_of(text)
    assert error.startswith("<string>: TOML nested too deeply: ")


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('server = "x"', "server: expected a table, got 'x'"),
        ("dynamic = []", "dynamic: expected a table, got []"),
        ('listeners = "x"', "listeners: expected a table, got 'x'"),
        (
            'virtual_hosts = { a = { domains = ["*"], routes = ["x"] } }',
            "virtual_hosts.a.routes[0]: expected a table, got 'x'",
        ),
        (
            'clusters = { c = { endpoints = ["127.0.0.1:1"], maglev = 5 } }',
            "clusters.c.maglev: expected a table, got 5",
        ),
    ],
)
def test_a_value_where_a_table_belongs_says_so(text, error):
    # Found by tests/fuzz: cattrs' own words came through ("'str' object has no attribute
    # 'keys'", "argument of type 'int' is not iterable").
    assert errors_of(text) == [error]


def test_a_network_filter_type_that_is_not_a_string_names_the_filters():
    # Found by tests/fuzz: an array or table as `type` gave "unhashable type: 'list'".
    text = """
[listeners.edge]
address = "127.0.0.1:0"
[[listeners.edge.filter_chains]]
filters = [{ type = ["tcp_proxy"] }]
"""
    (error,) = errors_of(text)
    assert error.startswith("listeners.edge.filter_chains[0].filters[0].type: must name a")
    assert error.endswith("got ['tcp_proxy']")


def test_booleans_are_not_strings():
    text = VALID.replace(
        'match = { path = "/healthz" }', 'match = { path = "/healthz", case_sensitive = "no" }'
    )
    assert errors_of(text) == [
        "virtual_hosts.api.routes[1].match.case_sensitive: expected bool, got 'no'"
    ]


def test_route_and_listener_consistency_checks():
    text = (VALID.replace('virtual_hosts = ["api"]', 'virtual_hosts = ["api", "other"]')) + (
        '[[virtual_hosts.api.routes]]\nmatch = { path = "/r" }\n'
        'redirect = { prefix_rewrite = "/x" }\n'
        '[[virtual_hosts.api.routes]]\ncluster = "api"\n'
        '[virtual_hosts.api.routes.match]\nprefix = "/q"\n'
        'query_parameters = [{ name = "a", exact = "1", present = true }]\n'
        '[virtual_hosts.other]\ndomains = ["API.example.com"]\n'
    )
    errors = errors_of(text)
    assert (
        "virtual_hosts.api.routes[2].redirect.prefix_rewrite: only allowed with a prefix match"
        in errors
    )
    assert (
        "virtual_hosts.api.routes[3].match.query_parameters[0]: set at most one of exact, "
        "regex, present, got ['exact', 'present']" in errors
    )
    assert (
        "listeners.edge.virtual_hosts: domain 'API.example.com' is in both "
        "virtual_hosts.api and virtual_hosts.other" in errors
    )


@pytest.mark.parametrize(
    ("admin", "endpoint"),
    [
        ("127.0.0.1:9901", "127.0.0.1:9901"),
        ("127.0.0.1:9901", "localhost:9901"),
        ("localhost:9901", "127.0.0.1:9901"),
        ("[::1]:9901", "[0:0:0:0:0:0:0:1]:9901"),
    ],
)
def test_a_cluster_endpoint_that_is_the_admin_endpoint_is_an_error(admin, endpoint):
    text = VALID.replace('address = "127.0.0.1:9901"', f'address = "{admin}"').replace(
        '"127.0.0.1:8081"', f'"{endpoint}"'
    )
    assert errors_of(text) == [
        f"clusters.api.endpoints[1]: {parse_address(endpoint)} is the admin endpoint "
        f"(admin.address = '{parse_address(admin)}'); proxying to it would let any client "
        "drive the admin endpoint"
    ]


def test_the_admin_port_on_another_address_is_no_error():
    bound_elsewhere = VALID.replace('"127.0.0.1:8081"', '"127.0.0.2:9901"')
    assert loads_config(bound_elsewhere).clusters["api"].endpoints[1].address.port == 9901
    any_port = VALID.replace('address = "127.0.0.1:9901"', 'address = "127.0.0.1:0"')
    assert loads_config(any_port.replace('"127.0.0.1:8081"', '"127.0.0.1:0"'))


def test_a_loopback_endpoint_on_the_port_of_a_wildcard_admin_is_an_error():
    exposed = VALID.replace(
        'address = "127.0.0.1:9901"', 'address = "0.0.0.0:9901"\nallow_non_loopback = true'
    ).replace('"127.0.0.1:8081"', '"127.0.0.1:9901"')
    (error,) = errors_of(exposed)
    assert error.startswith("clusters.api.endpoints[1]: 127.0.0.1:9901 is the admin endpoint")


@pytest.mark.parametrize(
    ("value", "size"),
    [(1000, 1000), ("64KiB", 65536), ("512MiB", 512 << 20), ("1.5GiB", 3 << 29), ("1TiB", 1 << 40)],
)
def test_byte_sizes(value, size):
    assert parse_byte_size(value) == size


@pytest.mark.parametrize("bad", ["512MB", "512", "1 GiB", "GiB", True, 1.5, "-1KiB"])
def test_bad_byte_sizes(bad):
    with pytest.raises(ValueError, match="512MiB"):
        parse_byte_size(bad)
    with pytest.raises(ValueError, match="at most 1024TiB"):
        parse_byte_size("9" * 400 + "TiB")


def test_overload_defaults_and_errors():
    config = loads_config('[overload]\nmax_rss = "2GiB"\n')
    assert config.overload.max_rss == 2 << 30
    assert config.overload.actions == list(DEFAULT_OVERLOAD_ACTIONS)
    assert config.overload.max_downstream_connections is None
    actions = """
[[overload.actions]]
name = "stop_accepting_requests"
threshold = 0.9
[[overload.actions]]
name = "stop_accepting_requests"
threshold = 0.95
"""
    assert errors_of(f"[overload]\n{actions}") == [
        "overload.actions: the thresholds are fractions of max_rss, which is unset",
        "overload.actions[1].name: 'stop_accepting_requests' is already at actions[0]",
    ]
    assert errors_of('[overload]\nrefresh_interval = "0s"\n') == [
        "overload.refresh_interval: must be at least 1ms, got 0ms"
    ]
    assert errors_of("[overload]\nmax_downstream_connections = 0\n") == [
        "overload.max_downstream_connections: must be from 1 to 4294967295, got 0"
    ]
    assert errors_of("[overload]\nmax_rss = 1000\n") == [
        "overload.max_rss: must be from 1048576 to 1125899906842624, got 1000"
    ]
    assert errors_of(
        '[overload]\nmax_rss = "1GiB"\n[[overload.actions]]\nname = "shrink_heap"\n'
        'threshold = 0.5\n[[overload.actions]]\nname = "disable_http_keepalive"\n'
        "threshold = 1.5\n"
    ) == [
        "overload.actions[0].name: expected one of 'stop_accepting_connections', "
        "'disable_http_keepalive', 'stop_accepting_requests', got 'shrink_heap'",
        "overload.actions[1].threshold: must be <= 1: 1.5",
    ]


def docs_example(containing: str) -> str:
    """The one TOML example of docs/configuration.md that holds `containing`."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    blocks = re.findall(r"```toml\n(.*?)```", docs.read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


def test_http1_parser_is_chosen_per_listener_and_per_cluster():
    text = docs_example('http1_parser = "h11"')
    config = loads_config(text)
    assert config.listeners["webdav"].http1_parser == "h11"
    assert config.clusters["files"].http1_parser == "h11"
    default = loads_config(VALID)
    assert default.listeners["edge"].http1_parser == default.clusters["api"].http1_parser
    assert default.listeners["edge"].http1_parser == "llhttp"
    assert errors_of(text.replace('"h11"', '"picohttp"')) == [
        "listeners.webdav.http1_parser: expected one of 'llhttp', 'h11', got 'picohttp'",
        "clusters.files.http1_parser: expected one of 'llhttp', 'h11', got 'picohttp'",
    ]


def test_tracing_example():
    text = docs_example("[tracing]")
    config = loads_config(text)
    assert config.tracing is not None
    assert (config.tracing.protocol, config.tracing.sampling) == ("grpc", 10)
    assert config.clusters[config.tracing.collector_cluster].protocol == "http2"
    assert errors_of(text.replace('protocol = "http2"\n', "")) == [
        "tracing.collector_cluster: 'otel_collector' must be an http2 cluster for "
        'protocol = "grpc"'
    ]


@pytest.mark.parametrize(
    ("mutation", "error"),
    [
        (
            '"x-gateway" = "a\\nb"',
            "http_filters.add_headers: 'request_headers_to_add': the value of 'x-gateway' "
            "holds a line break, a NUL or whitespace around it",
        ),
        (
            '"x-gateway" = " 1"',
            "http_filters.add_headers: 'request_headers_to_add': the value of 'x-gateway' "
            "holds a line break, a NUL or whitespace around it",
        ),
        (
            '"x gateway" = "1"',
            "http_filters.add_headers: 'request_headers_to_add': 'x gateway' is not a header name",
        ),
    ],
)
def test_header_mutations_must_be_sendable(mutation, error):
    # A value with a line break would end a header line early (or be refused by an
    # HTTP/2 peer): a config error naming its place, not a 500 on every request.
    assert errors_of(VALID.replace('"x-gateway" = "1"', mutation)) == [error]


def test_grpc_stats_example_and_errors():
    text = docs_example('type = "grpc_stats"')
    config = loads_config(text).http_filters["grpc"].config
    allowlist = config.individual_method_stats_allowlist
    assert [(s.name, s.method_names) for s in allowlist.services] == [
        ("orders.v1.OrderService", ["Create", "Get", "Watch"]),
        ("grpc.health.v1.Health", ["Check"]),
    ]
    assert config.enable_upstream_stats and not config.stats_for_all_methods
    assert config.max_methods == 1000
    both = text.replace("enable_upstream_stats = true", "stats_for_all_methods = true")
    assert errors_of(both) == [
        "http_filters.grpc.stats_for_all_methods: must not be set together with "
        "individual_method_stats_allowlist"
    ]
    no_methods = text.replace('["Check"]', "[]")
    assert errors_of(no_methods) == [
        "http_filters.grpc.individual_method_stats_allowlist.services[1]: "
        "Length of 'method_names' must be >= 1: 0"
    ]
    no_bound = text.replace("enable_upstream_stats = true", "max_methods = 0")
    assert errors_of(no_bound) == ["http_filters.grpc.max_methods: must be from 1 to 100000, got 0"]
    # Envoy's emit_filter_state is not supported: refused, not ignored.
    state = text.replace("enable_upstream_stats = true", "emit_filter_state = true")
    assert errors_of(state) == ["http_filters.grpc: unknown key 'emit_filter_state'"]


def test_grpc_web_examples_are_valid():
    """The filter's example in configuration.md and the how-to's in operations.md."""
    text = docs_example('type = "grpc_web"')
    config = loads_config(text)
    assert config.listeners["web"].http_filters == ["grpc_web", "cors"]
    assert config.http_filters["grpc_web"].type == "grpc_web"
    operations = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
    blocks = re.findall(r"```toml\n(.*?)```", operations.read_text(encoding="utf-8"), re.S)
    (how_to,) = [b for b in blocks if 'type = "grpc_web"' in b]
    assert loads_config(how_to).http_filters["cors"].type == "cors"
    # No keys, as Envoy's has none: anything else is an error naming it.
    assert errors_of(text.replace('type = "grpc_web"', 'type = "grpc_web"\nmode = "text"')) == [
        "http_filters.grpc_web: unknown key 'mode'"
    ]


def test_stats_sinks_and_log_format_examples_and_errors():
    sinks = loads_config(docs_example('type = "dog_statsd"'))
    assert [(s.type, str(s.address), s.prefix) for s in sinks.stats_sinks] == [
        ("statsd", "127.0.0.1:8125", "envoy"),
        ("dog_statsd", "127.0.0.1:8126", "edge"),
    ]
    assert sinks.server.stats_flush_interval == 10.0
    assert sinks.stats_sinks[0].max_bytes_per_datagram == 1432
    server = loads_config(docs_example('log_format = "json"'))
    assert (server.server.log_format, server.server.stats_flush_interval) == ("json", 10.0)
    default = loads_config(VALID)
    assert (default.server.log_format, default.server.stats_flush_interval) == ("text", 5.0)
    assert default.stats_sinks == []
    bad = (
        docs_example('type = "dog_statsd"')
        .replace('"statsd"', '"graphite"')
        .replace('"127.0.0.1:8126"', '"127.0.0.1"')
        .replace('"edge"', '"a|b"')
    )
    assert errors_of(bad) == [
        "stats_sinks[0].type: expected one of 'statsd', 'dog_statsd', got 'graphite'",
        "stats_sinks[1].address: expected 'host:port' (or '[::1]:port') with a port 0-65535, "
        "got '127.0.0.1'",
    ]
    assert errors_of('[[stats_sinks]]\ntype = "statsd"\naddress = "127.0.0.1:0"\n') == [
        "stats_sinks[0].address: must have a port from 1 to 65535, got '127.0.0.1:0'"
    ]
    assert errors_of(
        '[[stats_sinks]]\ntype = "statsd"\naddress = "h:1"\nprefix = "a|b"\n'
        '[server]\nstats_flush_interval = "0s"\nlog_format = "xml"\n'
    ) == [
        "server.log_format: expected one of 'text', 'json', got 'xml'",
        "stats_sinks[0].prefix: must be letters, digits, '_', '-' and dots (not first), got 'a|b'",
    ]


def test_quic_listener_example_and_errors(tmp_path):
    """The QUIC listener's example in configuration.md, with certificate files that exist,
    and the mistakes a QUIC listener can have, each named by its TOML path."""
    ca = trustme.CA()
    cert = ca.issue_cert("api.example.com")
    chain, key = tmp_path / "api.crt", tmp_path / "api.key"
    chain.write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    text = (
        docs_example('protocol = "quic"')
        .replace("/etc/gateway/api.crt", str(chain))
        .replace("/etc/gateway/api.key", str(key))
    )
    config = loads_config(text)
    quic = config.listeners["http3"]
    assert (quic.protocol, quic.address.port, config.listeners["https"].protocol) == (
        "quic",
        443,
        "tcp",
    )
    assert (quic.quic.max_concurrent_streams, quic.quic.retry, quic.quic.idle_timeout) == (
        200,
        True,
        120.0,
    )
    hcm = config.listeners["https"].filter_chains[0].filters[0]
    assert getattr(hcm, "advertise_http3", None) == "http3"
    assert loads_config(VALID).listeners["edge"].protocol == "tcp"
    bad = (
        text.replace('advertise_http3 = "http3"', 'advertise_http3 = "https"')
        .replace("max_concurrent_streams = 200", "max_concurrent_streams = 0")
        .replace(f'private_key = "{key}" }}]\nmax', f'private_key = "{tmp_path}/nope.key" }}]\nmax')
    )
    assert errors_of(bad) == [
        "listeners.http3.quic.max_concurrent_streams: must be from 1 to 2147483647, got 0",
    ]
    bad = bad.replace("max_concurrent_streams = 0", "max_concurrent_streams = 1")
    assert errors_of(bad) == [
        f"listeners.http3.quic.certificates[0].private_key: cannot read {tmp_path}/nope.key: "
        "No such file or directory",
        "listeners.https.filter_chains[0].filters[0].advertise_http3: no listener named "
        "'https' with protocol = \"quic\"",
    ]
    no_cert = text.replace("[listeners.http3.quic]\ncertificates", "[listeners.http3.quic]\nx")
    assert "listeners.http3.quic: unknown key 'x'" in errors_of(no_cert)[0]
