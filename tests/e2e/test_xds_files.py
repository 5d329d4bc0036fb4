"""xDS from files (`[dynamic] path`): Envoy v3 resources drive listeners, routes, clusters
and endpoints; bad updates are refused (NACK) and traffic carries on."""

from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import trio

from gateway import open_gateway
from gateway.config import loads_config
from tests.config_builder import ConfigBuilder
from tests.helpers import admin_url, start_upstream

HCM = (
    "type.googleapis.com/envoy.extensions.filters.network."
    "http_connection_manager.v3.HttpConnectionManager"
)


def listener_yaml() -> str:
    return f"""
version_info: "l1"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: xds_edge
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": {HCM}
        stat_prefix: xds_edge
        rds: {{ route_config_name: main_routes }}
        http_filters:
        - name: envoy.filters.http.router
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"""


def routes_yaml(version: str, action: str) -> str:
    return f"""
version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: main_routes
  virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
    - match: {{ prefix: "/" }}
      {action}
"""


TO_APP = "route: { cluster: app, timeout: 5s }"
DIRECT = 'direct_response: { status: 200, body: { inline_string: "from xds" } }'


def cluster_yaml(extra: str = "") -> str:
    return f"""
version_info: "c1"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: app
  type: EDS
  connect_timeout: 1s
  lb_policy: ROUND_ROBIN
  eds_cluster_config: {{ eds_config: {{ path_config_source: {{ path: xds }} }} }}
{extra}
"""


def endpoints_yaml(version: str, *ports: int) -> str:
    lb = "\n".join(
        "    - endpoint: { address: { socket_address: "
        f"{{ address: 127.0.0.1, port_value: {p} }} }} }}"
        for p in ports
    )
    return f"""
version_info: "{version}"
resources:
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: app
  endpoints:
  - lb_endpoints:
{lb}
"""


def files_config(xds: Path) -> str:
    """Only admin: every resource comes from the files in `xds`."""
    config = ConfigBuilder()
    config.table("dynamic", path=str(xds))
    return config.toml()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.05)


async def test_resources_from_files_and_eds_without_reload(nursery, tmp_path: Path):
    a, b = await start_upstream(nursery, "a"), await start_upstream(nursery, "b")
    xds = tmp_path / "xds"
    xds.mkdir()
    (xds / "listeners.yaml").write_text(listener_yaml())
    (xds / "routes.yaml").write_text(routes_yaml("r1", TO_APP))
    (xds / "clusters.yaml").write_text(cluster_yaml())
    (xds / "endpoints.yaml").write_text(endpoints_yaml("e1", a.port))
    async with open_gateway(loads_config(files_config(xds))) as gw, httpx.AsyncClient() as client:
        edge = f"http://127.0.0.1:{gw.listener_ports['xds_edge']}"
        assert (await client.get(f"{edge}/x")).json()["server"] == "a"
        cluster = gw.clusters.get("app")

        # EDS: b joins, a leaves while a request is in flight on it; no reload happens.
        async with trio.open_nursery() as n:
            results: list[int] = []

            async def slow() -> None:
                results.append((await client.get(f"{edge}/slow?delay=0.5")).status_code)

            n.start_soon(slow)
            with trio.fail_after(5):
                while not any(r.path.startswith("/slow") for r in a.requests):
                    await trio.sleep(0.01)
            (xds / "endpoints.yaml").write_text(endpoints_yaml("e2", b.port))

            async def moved() -> bool:
                return (await client.get(f"{edge}/x")).json()["server"] == "b"

            await wait_for(moved)
        assert results == [200]
        assert gw.reloads == 0 and gw.clusters.get("app") is cluster

        dump = (await client.get(admin_url(gw, "/config_dump"))).json()["dynamic_resources"]
        versions = {(r["type"], r["name"]): r["version"] for r in dump["resources"]}
        assert versions[("ClusterLoadAssignment", "app")] == "e2"
        assert versions[("Listener", "xds_edge")] == "l1"
        assert dump["last_update_rejected"] is None

        # RDS: the route changes; that one is a (request-preserving) reload.
        (xds / "routes.yaml").write_text(routes_yaml("r2", DIRECT))

        async def routed() -> bool:
            return (await client.get(f"{edge}/x")).text == "from xds"

        await wait_for(routed)
        assert gw.reloads == 1


async def test_an_unsupported_field_is_nacked_and_traffic_carries_on(nursery, tmp_path: Path):
    a = await start_upstream(nursery, "a")
    xds = tmp_path / "xds"
    xds.mkdir()
    (xds / "listeners.yaml").write_text(listener_yaml())
    (xds / "routes.yaml").write_text(routes_yaml("r1", TO_APP))
    (xds / "clusters.yaml").write_text(cluster_yaml())
    (xds / "endpoints.yaml").write_text(endpoints_yaml("e1", a.port))
    async with open_gateway(loads_config(files_config(xds))) as gw, httpx.AsyncClient() as client:
        edge = f"http://127.0.0.1:{gw.listener_ports['xds_edge']}"
        extra = "  transport_socket: { name: envoy.transport_sockets.raw_buffer }\n"
        (xds / "clusters.yaml").write_text(cluster_yaml(extra))

        async def rejected() -> bool:
            dump = (await client.get(admin_url(gw, "/config_dump"))).json()
            return dump["dynamic_resources"]["last_update_rejected"] is not None

        await wait_for(rejected)
        dump = (await client.get(admin_url(gw, "/config_dump"))).json()["dynamic_resources"]
        assert "Cluster 'app'" in dump["last_update_rejected"]
        assert "transport_socket: not supported" in dump["last_update_rejected"]
        for _ in range(5):
            assert (await client.get(f"{edge}/x")).json()["server"] == "a"
        # Fixed: accepted again.
        (xds / "clusters.yaml").write_text(cluster_yaml())

        async def accepted() -> bool:
            dump = (await client.get(admin_url(gw, "/config_dump"))).json()
            return dump["dynamic_resources"]["last_update_rejected"] is None

        await wait_for(accepted)
