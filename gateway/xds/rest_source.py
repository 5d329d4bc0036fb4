"""A control plane polled with Envoy's REST-JSON xDS protocol.

Every `refresh_delay`, for each resource type (CDS, EDS, LDS, RDS), the gateway POSTs a
DiscoveryRequest (`version_info` of what it runs, its node, the type) to
`/v3/discovery:TYPE` on the control plane's cluster, through the same connection pools
as any upstream. `304` means nothing changed; a DiscoveryResponse with a new
`version_info` is an update of that type, applied (ACK: the next requests carry its
version) or refused (NACK: they keep the old version and carry `error_detail` with the
reason, naming the field) on its own, as Envoy does with each subscription.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version

import attrs
import trio

from gateway.clusters.http_client import call_service
from gateway.clusters.manager import ClusterManager
from gateway.config.model import Dynamic, RestApiConfigSource
from gateway.errors import ConfigError, GatewayError
from gateway.http.headers import HeaderMap, RequestHead
from gateway.tasktree import annotate
from gateway.xds import translate
from gateway.xds.compose import Composed, Resource, XdsState, resource_of

log = logging.getLogger("gateway.xds")

#: The order of a round: clusters (and their endpoints) before what routes to them.
_ENDPOINTS = {
    translate.CLUSTER: "clusters",
    translate.CLUSTER_LOAD_ASSIGNMENT: "endpoints",
    translate.LISTENER: "listeners",
    translate.ROUTE_CONFIGURATION: "routes",
}
#: A DiscoveryResponse larger than this is refused.
_MAX_RESPONSE = 16 << 20
#: google.rpc.Code INVALID_ARGUMENT, what Envoy puts in a NACK's error_detail.
_INVALID_ARGUMENT = 3


@attrs.define
class _Subscription:
    """One resource type: what was accepted, what is being considered, what was refused."""

    accepted_version: str = ""
    accepted: list[Resource] = attrs.Factory(list)
    nonce: str = ""
    pending: tuple[str, list[Resource]] | None = None
    #: The last version refused, kept to be tried again with the next round's news (a
    #: whole update is refused for one bad part; its other parts may be fine).
    refused: tuple[str, list[Resource]] | None = None
    #: How many updates had been taken when it was refused.
    refused_at: int = 0
    error: str | None = None


class XdsRestSource(XdsState):
    def __init__(self, dynamic: Dynamic) -> None:
        assert dynamic.rest is not None
        self._rest: RestApiConfigSource = dynamic.rest
        super().__init__(f"rest:{self._rest.cluster}")
        self._node = {
            "id": dynamic.node.id,
            "cluster": dynamic.node.cluster,
            "user_agent_name": "gateway",
            "user_agent_version": _gateway_version(),
        }
        self._subscriptions = {type_url: _Subscription() for type_url in _ENDPOINTS}
        self._clusters: ClusterManager | None = None
        #: Updates taken so far.
        self._accepted = 0

    def bind(self, clusters: ClusterManager) -> None:
        """The gateway's clusters: the control plane is reached through one of them."""
        self._clusters = clusters

    def current_resources(self) -> list[Resource]:
        resources = []
        for sub in self._subscriptions.values():
            resources += sub.pending[1] if sub.pending is not None else sub.accepted
        return resources

    def accept(self, composed: Composed) -> None:
        for sub in self._subscriptions.values():
            if sub.pending is not None:
                sub.accepted_version, sub.accepted = sub.pending
                sub.pending, sub.refused, sub.error = None, None, None
        self._accepted += 1
        super().accept(composed)

    def reject(self, errors: list[str]) -> None:
        super().reject(errors)
        for sub in self._subscriptions.values():
            if sub.pending is not None:
                sub.refused, sub.refused_at, sub.error = (
                    sub.pending,
                    self._accepted,
                    self.last_error,
                )
                sub.pending = None

    async def watch(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Each type is its own subscription, ACKed or NACKed on its own, as in Envoy:
        a cluster the gateway refuses does not hold back an endpoint change. Types are
        asked in dependency order; a type refused earlier is tried again once another
        type's update was taken (it may have been waiting for it)."""
        annotate("xds rest source", cluster=self._rest.cluster)
        while True:
            for type_url in _ENDPOINTS:
                sub = self._subscriptions[type_url]
                try:
                    with trio.fail_after(self._rest.request_timeout):
                        news = await self._discover(type_url)
                except (GatewayError, ConfigError, OSError, ValueError, trio.TooSlowError) as exc:
                    log.warning("xDS %s from %s failed: %s", _ENDPOINTS[type_url], self.source, exc)
                    continue
                if not news and sub.refused is not None and sub.refused_at < self._accepted:
                    sub.pending, news = sub.refused, True
                if news:
                    await on_change()
            await trio.sleep(self._rest.refresh_delay)

    async def _discover(self, type_url: str) -> bool:
        """Asks for one type; True if the answer is news (now pending)."""
        assert self._clusters is not None, "bound to the gateway's clusters before watching"
        sub = self._subscriptions[type_url]
        request: dict[str, object] = {
            "version_info": sub.accepted_version,
            "node": self._node,
            "resource_names": [],
            "type_url": type_url,
            "response_nonce": sub.nonce,
        }
        if sub.error is not None:
            request["error_detail"] = {
                "code": _INVALID_ARGUMENT,
                "message": sub.error,
                "details": [],
            }
        cluster = self._clusters.get(self._rest.cluster)
        head = RequestHead(
            "POST",
            f"/v3/discovery:{_ENDPOINTS[type_url]}",
            self._rest.cluster,
            "http",
            HeaderMap([("content-type", "application/json")]),
        )
        answer = await call_service(
            cluster, head, max_body=_MAX_RESPONSE, body=json.dumps(request).encode()
        )
        if answer.status == 304:
            return False
        if answer.status != 200:
            raise ValueError(f"status {answer.status}: {answer.body[:200]!r}")
        response = json.loads(answer.body)
        version_info = str(response.get("version_info", ""))
        sub.nonce = str(response.get("nonce", ""))
        refused = sub.refused[0] if sub.refused is not None else None
        if version_info in (sub.accepted_version, refused):
            return False
        where = f"{self.source} {_ENDPOINTS[type_url]}"
        resources = [
            resource_of(item, version_info, self.source, f"{where} resources[{i}]")
            for i, item in enumerate(response.get("resources", []))
        ]
        sub.pending = (version_info, resources)
        return True


def _gateway_version() -> str:
    try:
        return version("gateway")
    except PackageNotFoundError:
        return "dev"
