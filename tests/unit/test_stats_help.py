"""Every stat family has a description for Prometheus' `# HELP`, from the tables next to
where the stats are defined: checked over a gateway with every component that has stats."""

from gateway import loads_config
from gateway.admin.serve import serve_admin  # noqa: F401  (describes admin.*)
from gateway.observability.stats import help_text, render_prometheus
from gateway.server.gateway import Gateway
from gateway.server.supervisor import SupervisorStats  # noqa: F401  (describes server.*)
from tests.config_builder import proxy_config, route
from tests.tls_helpers import Pki

FILTERS = {
    "health": {"type": "health_check"},
    "limit": {"type": "buffer", "max_request_bytes": 1024},
    "gzip": {"type": "compressor"},
    "cors": {"type": "cors", "allow_origins": ["https://app.example.com"]},
    "authz": {"type": "ext_authz", "cluster": "backend"},
    "chaos": {"type": "fault", "abort": {"http_status": 503, "percentage": 1}},
    "jwt": {"type": "jwt_authn", "remote_jwks": {"cluster": "backend", "path": "/jwks"}},
    "rate": {"type": "local_ratelimit", "max_tokens": 10},
    "py": {"type": "python", "module": "tests.filter_samples:Boom", "config": {"path": "/x"}},
    "policy": {"type": "rbac", "action": "allow"},
}


def rich_config(pki: Pki) -> str:
    """Listeners with every HTTP filter, TLS, tcp_proxy, network rbac and connection
    limits, per-route stats; a TLS cluster with health checks and outlier detection;
    overload actions; a stats sink."""
    config = proxy_config(
        8080,
        http_filters=FILTERS,
        listener={"per_route_stats": True},
        routes=[route("/grpc", cluster="secure")],
    )
    cert = pki.issue("gw.example")
    config.listener("tls")
    config.filter_chain(
        "tls",
        filters=[{"type": "http_connection_manager", "virtual_hosts": ["main"]}],
        tls={"certificates": [cert.table()]},
    )
    config.listener("l4")
    config.filter_chain(
        "l4",
        filters=[
            {"type": "rbac", "source_cidrs": ["127.0.0.0/8"], "stat_prefix": "l4"},
            {"type": "connection_limit", "max_connections": 10, "stat_prefix": "l4"},
            {"type": "tcp_proxy", "cluster": "backend", "stat_prefix": "l4"},
        ],
    )
    config.cluster(
        "secure",
        8443,
        tls={"trusted_ca": pki.ca_file},
        health_checks=[{"type": "http", "path": "/healthz"}],
        outlier_detection={"consecutive_5xx": 5},
    )
    config.table("overload", max_rss="1GiB", max_downstream_connections=100)
    config.stats_sink("statsd", 8125)
    return config.toml()


async def test_every_stat_family_has_help(tmp_path):
    gw = Gateway(loads_config(rich_config(Pki(tmp_path))))
    families = {stat.prom_name: stat.tag_name for stat in gw.stats}
    # Each component is there: a table that lost its stats would pass unnoticed.
    prefixes = {tag.split(".")[0] for tag in families.values()}
    assert prefixes >= {
        "listener",
        "http",
        "http_filter",
        "vhost",
        "tcp",
        "rbac",
        "connection_limit",
        "cluster",
        "overload",
        "server",
    }
    assert "cluster.ssl.handshake" in families.values()
    assert "cluster.health_check.attempt" in families.values()
    assert "cluster.outlier_detection.ejections_active" in families.values()
    assert "listener.ssl.handshake" in families.values()
    described = {"admin.rq_refused", "server.workers_active", "server.worker_restarts"}
    described |= {"stats_sink.datagrams_sent", "stats_sink.datagrams_dropped"}
    missing = sorted(t for t in [*families.values(), *described] if not help_text(t))
    assert not missing, f"stats without a description: {missing}"
    text = render_prometheus(gw.stats)
    for family, tag in families.items():
        assert f"# HELP {family} {help_text(tag)}\n# TYPE {family} " in text
