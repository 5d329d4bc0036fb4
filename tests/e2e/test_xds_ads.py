"""ADS (gRPC, state of the world) drives two gateway instances: clusters, endpoints,
listeners and routes on one stream each, ACK/NACK, under load. The control plane is a
real gRPC server (grpcio) in tests/ads_server.py."""

from functools import partial

import httpx
import pytest
import trio

from gateway import open_gateway
from gateway.config import loads_config
from gateway.xds import translate
from tests.ads_server import AdsServer
from tests.config_builder import ConfigBuilder
from tests.helpers import SteadyLoad, admin_url, converged, free_port, start_upstream

HCM = (
    "type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager"
)


def gateway_config(node: str, ads_port: int, delta: bool) -> str:
    """Everything from the ADS server at `ads_port` (incremental if `delta`), as `node`."""
    config = ConfigBuilder()
    config.server(drain_timeout="3s", drain_grace="300ms")
    config.table("dynamic", "ads", cluster="xds", delta=delta)
    config.table("dynamic", "node", id=node)
    config.cluster("xds", ads_port, protocol="http2")
    return config.toml()


def listener(port: int) -> dict:
    return {
        "name": "edge",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "hcm",
                        "typed_config": {
                            "@type": HCM,
                            "stat_prefix": "edge",
                            "rds": {"route_config_name": "main"},
                        },
                    }
                ]
            }
        ],
    }


def eds_cluster(name: str, unsupported: bool = False) -> dict:
    cluster = {"name": name, "type": "EDS", "connect_timeout": "1s", "eds_cluster_config": {}}
    if unsupported:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.raw_buffer"}
    return cluster


def assignment(name: str, *ports: int) -> dict:
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in ports
    ]
    return {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}


def routes(*pairs: tuple[str, str]) -> list[dict]:
    return [
        {
            "name": "main",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [
                        {"match": {"prefix": prefix}, "route": {"cluster": cluster}}
                        for prefix, cluster in pairs
                    ],
                }
            ],
        }
    ]


@pytest.fixture
def ads():
    server = AdsServer()
    yield server
    server.server.stop(None)


@pytest.mark.parametrize("delta", [False, True], ids=["state-of-the-world", "delta"])
async def test_ads_drives_two_instances_with_ack_and_nack(nursery, ads, delta):
    a1, a2, b = [await start_upstream(nursery, n) for n in ("a1", "a2", "b")]
    ports = {"gw1": free_port(), "gw2": free_port()}
    ads.set(translate.CLUSTER, "c1", [eds_cluster("app")])
    ads.set(translate.CLUSTER_LOAD_ASSIGNMENT, "e1", [assignment("app", a1.port, a2.port)])
    ads.set(translate.ROUTE_CONFIGURATION, "r1", routes(("/", "app")))
    # One Listener resource per instance would need per-node snapshots; both instances
    # take the same listener here, on the port the test gives each in turn below.
    load = SteadyLoad()
    async with open_gateway(loads_config(gateway_config("gw1", ads.port, delta))) as gw1:
        ads.set(translate.LISTENER, "l1", [listener(ports["gw1"])])
        edge1 = f"http://127.0.0.1:{ports['gw1']}"
        async with httpx.AsyncClient(timeout=5) as client:
            await converged(client, [edge1 + "/"], {"a1", "a2"}, timeout=10)

            async with trio.open_nursery() as loaders:
                loaders.start_soon(partial(load.client, edge1 + "/load", timeout=5))
                ads.set(translate.CLUSTER, "c2", [eds_cluster("app"), eds_cluster("extra")])
                ads.set(
                    translate.CLUSTER_LOAD_ASSIGNMENT,
                    "e2",
                    [assignment("app", a1.port, a2.port), assignment("extra", b.port)],
                )
                ads.set(translate.ROUTE_CONFIGURATION, "r2", routes(("/b", "extra"), ("/", "app")))
                await converged(client, [edge1 + "/b"], {"b"}, timeout=2)
                ads.set(
                    translate.CLUSTER_LOAD_ASSIGNMENT,
                    "e3",
                    [assignment("app", a1.port), assignment("extra", b.port)],
                )
                await converged(client, [edge1 + "/"], {"a1"}, timeout=2)
                await trio.sleep(0.3)
                loaders.cancel_scope.cancel()
            assert load.failures == []
            assert load.served > 30

            # The second instance joins later and converges on the same clusters. (It
            # refuses the listener, whose port the first one holds: a NACK of its own.)
            async with open_gateway(loads_config(gateway_config("gw2", ads.port, delta))) as gw2:
                with trio.fail_after(5):
                    while "extra" not in gw2.clusters.clusters:
                        await trio.sleep(0.05)
                assert [str(h) for h in gw2.clusters.get("app").hosts] == [f"127.0.0.1:{a1.port}"]

            # A cluster and its route removed (delta: sent as removed names).
            ads.set(translate.ROUTE_CONFIGURATION, "r3", routes(("/", "app")))
            ads.set(translate.CLUSTER_LOAD_ASSIGNMENT, "e4", [assignment("app", a1.port)])
            ads.set(translate.CLUSTER, "c3", [eds_cluster("app")])
            await converged(client, [edge1 + "/b"], {"a1"}, timeout=2)
            with trio.fail_after(3):
                while "extra" in gw1.clusters.clusters:
                    await trio.sleep(0.05)
            if delta:
                assert (translate.CLUSTER, "extra") in ads.removed

            # NACK: the control plane hears the reason, naming the field; traffic goes on.
            ads.set(translate.CLUSTER, "c4", [eds_cluster("app", unsupported=True)])

            def cluster_nacks() -> list:
                return [n for n in ads.nacks() if n.type_url == translate.CLUSTER]

            with trio.fail_after(5):
                while not cluster_nacks():
                    await trio.sleep(0.05)
            nack = cluster_nacks()[-1]
            if not delta:
                assert nack.version_info == "c3"  # it stays on the version it runs
            assert "transport_socket: not supported" in nack.error_detail.message
            dump = (await client.get(admin_url(gw1, "/config_dump"))).json()
            assert dump["dynamic_resources"]["source"] == "ads:xds"
            await converged(client, [edge1 + "/"], {"a1"}, timeout=1)
