"""The tests' config builder writes what the loader reads back as the config it describes."""

from gateway import loads_config
from gateway.config.model import Address, Endpoint
from tests.config_builder import ConfigBuilder, proxy_config, route


def test_proxy_config_loads_as_described():
    config = proxy_config(
        8080,
        {"address": "127.0.0.2:81", "weight": 3},
        listener={"upgrade": ["websocket"]},
        http_filters={"hc": {"type": "health_check", "path": "/healthz"}},
        routes=[route("/ws", cluster="backend", tunnel_idle_timeout="300ms")],
        catch_all={"retry_policy": {"retry_on": ["5xx"]}},
        cluster={"lb_policy": "random", "circuit_breakers": {"max_retries": 0}},
    )
    config.routes()[0]["upgrade"] = []
    config.table("overload", max_downstream_connections=6)
    loaded = loads_config(config.toml())
    edge = loaded.listeners["edge"]
    assert (edge.virtual_hosts, edge.http_filters, edge.upgrade) == (
        ["main"],
        ["hc"],
        ["websocket"],
    )
    assert loaded.http_filters["hc"].type == "health_check"
    ws, catch_all = loaded.virtual_hosts["main"].routes
    assert (ws.match.prefix, ws.upgrade, ws.tunnel_idle_timeout) == ("/ws", [], 0.3)
    assert (catch_all.match.prefix, catch_all.cluster) == ("/", "backend")
    assert catch_all.retry_policy is not None and catch_all.retry_policy.retry_on == ["5xx"]
    backend = loaded.clusters["backend"]
    assert backend.endpoints == [
        Endpoint(Address("127.0.0.1", 8080)),
        Endpoint(Address("127.0.0.2", 81), weight=3),
    ]
    assert (backend.lb_policy, backend.connect_timeout) == ("random", 1.0)
    assert backend.circuit_breakers.max_retries == 0
    assert loaded.overload.max_downstream_connections == 6
    assert loaded.admin is not None and loaded.admin.address == Address("127.0.0.1", 0)
    assert loaded.server.drain_timeout == 2.0


def test_builder_edits_tables_in_place_and_keeps_the_order_of_arrays():
    config = ConfigBuilder(admin=False)
    tcp_proxy = [{"type": "tcp_proxy", "cluster": "db"}]
    config.filter_chain("l4", filters=tcp_proxy)
    config.filter_chain(
        "l4", filters=tcp_proxy, name="tls", filter_chain_match={"transport_protocol": "tls"}
    )
    config.cluster("db", 1)
    config.cluster("db", 2, proxy_protocol="v2")  # new endpoints replace the old
    config.cluster("db", connect_timeout="250ms")  # no endpoints: they stay
    loaded = loads_config(config.toml())
    assert loaded.admin is None
    assert [c.name for c in loaded.listeners["l4"].filter_chains] == [None, "tls"]
    db = loaded.clusters["db"]
    assert (db.endpoints, db.proxy_protocol, db.connect_timeout) == (
        [Endpoint(Address("127.0.0.1", 2))],
        "v2",
        0.25,
    )
