"""What every xDS source shares: turning resources into a config, and Envoy's ACK/NACK.

A source (files, a REST control plane) produces `Resource`s; `XdsState.compose` adds them
to the TOML file's own tables and validates the result like any config, refusing the
update as a whole (a NACK, naming the resource and field) if any part cannot be honoured.
`accept` records an applied update (an ACK: versions, times); `reject` records the
reason of a refused one, which the source reports (REST: in the next request's
`error_detail`) while the last good config keeps serving.
"""

import abc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from gateway.clusters.manager import ClusterManager
from gateway.config.load import check_config
from gateway.config.model import Endpoint, GatewayConfig
from gateway.errors import ConfigError
from gateway.xds import translate

log = logging.getLogger("gateway.xds")

SHORT_TYPES = {
    translate.LISTENER: "Listener",
    translate.ROUTE_CONFIGURATION: "RouteConfiguration",
    translate.CLUSTER: "Cluster",
    translate.CLUSTER_LOAD_ASSIGNMENT: "ClusterLoadAssignment",
}


@attrs.frozen
class Resource:
    """One resource as a source found it: its type URL, its fields (without `@type`), the
    version it came with and where it came from."""

    type_url: str
    body: dict[str, Any]
    version: str
    source: str


def resource_of(item: object, version: str, source: str, where: str) -> Resource:
    """A resource from a decoded `{"@type": ..., ...}` object; ConfigError if not one."""
    if not isinstance(item, dict) or item.get("@type") not in translate.MESSAGES:
        known = ", ".join(sorted(translate.MESSAGES))
        raise ConfigError([f"{where}: '@type' must be one of {known}"])
    return Resource(item["@type"], {k: v for k, v in item.items() if k != "@type"}, version, source)


@attrs.frozen
class ResourceStatus:
    """One resource as /config_dump shows it."""

    type: str
    name: str
    version: str
    source: str
    last_updated: float


@attrs.frozen
class Composed:
    config: GatewayConfig
    assignments: dict[str, list[Endpoint]]
    resources: list[ResourceStatus]


class XdsState(abc.ABC):
    """The resources last applied, and the last refusal; shared by the sources."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.resources: list[ResourceStatus] = []
        #: The reason the last update was refused (a NACK's error_detail), if it was.
        self.last_error: str | None = None
        self._updated: dict[tuple[str, str], tuple[str, float]] = {}

    @abc.abstractmethod
    def current_resources(self) -> list[Resource]:
        """What the source holds now (the update being considered)."""

    @abc.abstractmethod
    async def watch(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Follows the source, calling `on_change` when it has something new."""

    async def snapshot(self) -> list[Resource]:
        """current_resources(), taken on the event loop (sources that read files read
        them in a worker thread instead)."""
        return self.current_resources()

    async def compose_in_thread(self, static: GatewayConfig) -> Composed:
        """`compose` for a running gateway: translating and checking a config is CPU work
        that grows with it, so it runs in a worker thread, on a snapshot of the
        resources, while the event loop serves."""
        resources = await self.snapshot()
        return await trio.to_thread.run_sync(self.compose_resources, static, resources)

    def compose(self, static: GatewayConfig) -> Composed:
        """The TOML config plus the source's resources; ConfigError (a NACK, naming the
        resource and field) if they cannot all be honoured."""
        return self.compose_resources(static, self.current_resources())

    def compose_resources(self, static: GatewayConfig, resources: list[Resource]) -> Composed:
        """`compose` with these resources; touches nothing the event loop changes."""
        listeners = dict(static.listeners)
        virtual_hosts = dict(static.virtual_hosts)
        clusters = dict(static.clusters)
        assignments: dict[str, list[Endpoint]] = {}
        pending_rds: list[tuple[str, str]] = []
        route_configs: dict[str, list[str]] = {}
        statuses = []
        errors: list[str] = []
        for resource in resources:
            type_url, body, version, source = (
                resource.type_url,
                resource.body,
                resource.version,
                resource.source,
            )
            name = body.get("name") or body.get("cluster_name") or "?"
            try:
                message = translate.parse(type_url, body)
                if type_url == translate.CLUSTER:
                    cluster_name, cluster = translate.cluster(message)
                    _add(clusters, cluster_name, cluster, "cluster")
                elif type_url == translate.CLUSTER_LOAD_ASSIGNMENT:
                    where = f"ClusterLoadAssignment {name!r}"
                    assignments[name] = translate.endpoints_of(message, where)
                elif type_url == translate.ROUTE_CONFIGURATION:
                    vhosts = translate.route_configuration(message)
                    config_name = translate.route_configuration_name(message)
                    route_configs[config_name] = [vh for vh, _ in vhosts]
                    for vh_name, vhost in vhosts:
                        _add(virtual_hosts, vh_name, vhost, "virtual host")
                else:
                    translated = translate.listener(message)
                    _add(listeners, translated.name, translated.listener, "listener")
                    for vh_name, vhost in translated.inline_routes:
                        _add(virtual_hosts, vh_name, vhost, "virtual host")
                    if translated.route_config_name is not None:
                        pending_rds.append((translated.name, translated.route_config_name))
            except (translate.Unsupported, ValueError, TypeError) as exc:
                errors.append(f"{SHORT_TYPES[type_url]} {name!r} ({source}): {exc}")
                continue
            statuses.append(ResourceStatus(SHORT_TYPES[type_url], name, version, source, 0.0))
        for listener_name, route_name in pending_rds:
            if route_name not in route_configs:
                errors.append(
                    f"Listener {listener_name!r}: route configuration {route_name!r} not found"
                )
                continue
            listeners[listener_name] = attrs.evolve(
                listeners[listener_name], virtual_hosts=route_configs[route_name]
            )
        for cluster_name in assignments:
            if cluster_name not in clusters or clusters[cluster_name].type != "eds":
                errors.append(
                    f"ClusterLoadAssignment {cluster_name!r}: no eds cluster of that name"
                )
        if errors:
            raise ConfigError(errors)
        config = attrs.evolve(
            static, listeners=listeners, virtual_hosts=virtual_hosts, clusters=clusters
        )
        check_config(config)
        return Composed(config, assignments, statuses)

    def accept(self, composed: Composed) -> None:
        """Records an applied update (Envoy's ACK): versions and update times."""
        now = time.time()
        resources = []
        for status in composed.resources:
            key = (status.type, status.name)
            previous = self._updated.get(key)
            updated = previous[1] if previous and previous[0] == status.version else now
            self._updated[key] = (status.version, updated)
            resources.append(attrs.evolve(status, last_updated=updated))
        self.resources = resources
        self.last_error = None

    def apply_assignments(self, clusters: ClusterManager, composed: Composed) -> None:
        """EDS: sets the hosts of eds clusters; unchanged ones are left alone."""
        for name, cluster in clusters.clusters.items():
            if cluster.config.type == "eds":
                cluster.assign_endpoints(composed.assignments.get(name, []))

    def dump(self) -> dict[str, object]:
        return {
            "source": self.source,
            "resources": [attrs.asdict(r) for r in self.resources],
            "last_update_rejected": self.last_error,
        }

    def reject(self, errors: list[str]) -> None:
        """Records a refused update (Envoy's NACK, with its error_detail)."""
        self.last_error = "; ".join(errors)
        log.error("xDS update from %s rejected (NACK): %s", self.source, self.last_error)


def _add(table: dict[str, Any], name: str, value: object, what: str) -> None:
    if name in table:
        raise ValueError(f"a {what} named {name!r} already exists")
    table[name] = value
