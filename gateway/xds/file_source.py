"""The path config source: a directory of Envoy v3 resources, watched for changes.

`[dynamic] path = "xds/"` points at files in YAML or JSON, each holding resources with
their `@type` (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment), either as a
DiscoveryResponse (`version_info` and `resources`), a list, or a single resource, as
Envoy's filesystem subscriptions read them. The resources are translated into the model
and added to the TOML file's own tables; the result is validated like any config.

Updates follow Envoy's ACK/NACK rules: a change that fails (a field the gateway cannot
honour, a reference to nothing) is refused as a whole with the reason, which names the
field, and the last good config keeps serving. Listener, route and cluster changes are
applied as a hot reload; ClusterLoadAssignment changes only change the hosts of `eds`
clusters, in place, without a reload.
"""

import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio
import yaml

from gateway.clusters.manager import ClusterManager
from gateway.config.load import check_config
from gateway.config.model import Endpoint, GatewayConfig
from gateway.errors import ConfigError
from gateway.tasktree import annotate
from gateway.xds import translate

log = logging.getLogger("gateway.xds")

#: How often the directory is looked at.
POLL_INTERVAL = 1.0
_SUFFIXES = (".yaml", ".yml", ".json")
_SHORT_TYPES = {
    translate.LISTENER: "Listener",
    translate.ROUTE_CONFIGURATION: "RouteConfiguration",
    translate.CLUSTER: "Cluster",
    translate.CLUSTER_LOAD_ASSIGNMENT: "ClusterLoadAssignment",
}


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


class XdsFileSource:
    def __init__(self, path: str) -> None:
        self.path = path
        self.resources: list[ResourceStatus] = []
        #: The reason the last update was refused (a NACK's error_detail), if it was.
        self.last_error: str | None = None
        self._updated: dict[tuple[str, str], tuple[str, float]] = {}

    # -- reading -------------------------------------------------------------------------

    def _files(self) -> list[Path]:
        directory = Path(self.path)
        if not directory.is_dir():
            raise ConfigError([f"dynamic.path: {self.path} is not a directory"])
        return sorted(p for p in directory.iterdir() if p.suffix in _SUFFIXES)

    def signature(self) -> bytes:
        digest = hashlib.sha256()
        for file in self._files():
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
        return digest.digest()

    def _read(self) -> list[tuple[str, dict[str, Any], str, str]]:
        """(type url, resource, version, source file) for every resource found."""
        found = []
        for file in self._files():
            try:
                document = yaml.safe_load(file.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError([f"{file}: cannot read: {exc}"]) from None
            version = ""
            if isinstance(document, dict) and "resources" in document:
                version = str(document.get("version_info", ""))
                items = document["resources"]
            else:
                items = document if isinstance(document, list) else [document]
            version = version or hashlib.sha256(file.read_bytes()).hexdigest()[:12]
            for i, item in enumerate(items or []):
                if not isinstance(item, dict) or item.get("@type") not in translate.MESSAGES:
                    raise ConfigError(
                        [
                            f"{file.name} resources[{i}]: '@type' must be one of "
                            + ", ".join(sorted(translate.MESSAGES))
                        ]
                    )
                body = {k: v for k, v in item.items() if k != "@type"}
                found.append((item["@type"], body, version, file.name))
        return found

    # -- composing -------------------------------------------------------------------------

    def compose(self, static: GatewayConfig) -> Composed:
        """The TOML config plus the directory's resources; ConfigError (a NACK, naming the
        resource and field) if they cannot all be honoured."""
        listeners = dict(static.listeners)
        virtual_hosts = dict(static.virtual_hosts)
        clusters = dict(static.clusters)
        assignments: dict[str, list[Endpoint]] = {}
        pending_rds: list[tuple[str, str]] = []
        route_configs: dict[str, list[str]] = {}
        statuses = []
        errors: list[str] = []
        for type_url, body, version, source in self._read():
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
                    route_configs[message.name] = [vh for vh, _ in vhosts]
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
                errors.append(f"{_SHORT_TYPES[type_url]} {name!r} ({source}): {exc}")
                continue
            statuses.append(ResourceStatus(_SHORT_TYPES[type_url], name, version, source, 0.0))
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
            cluster = clusters.get(cluster_name)
            if cluster is None or cluster.type != "eds":
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
            "source": f"path:{self.path}",
            "resources": [attrs.asdict(r) for r in self.resources],
            "last_update_rejected": self.last_error,
        }

    # -- watching --------------------------------------------------------------------------

    async def watch(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Polls the directory and calls `on_change` after each change."""
        annotate("xds file source", path=self.path)
        last = self.signature()
        while True:
            await trio.sleep(POLL_INTERVAL)
            try:
                signature = self.signature()
            except (OSError, ConfigError):
                continue  # a directory being rewritten; look again next time
            if signature != last:
                last = signature
                await on_change()

    def reject(self, errors: list[str]) -> None:
        """Records a refused update (Envoy's NACK, with its error_detail)."""
        self.last_error = "; ".join(errors)
        log.error("xDS update from %s rejected (NACK): %s", self.path, self.last_error)


def _add(table: dict[str, Any], name: str, value: object, what: str) -> None:
    if name in table:
        raise ValueError(f"a {what} named {name!r} already exists")
    table[name] = value
