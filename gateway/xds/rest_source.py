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

import trio

from gateway.clusters.http_client import call_service
from gateway.clusters.manager import ClusterManager
from gateway.config.model import Dynamic, RestApiConfigSource
from gateway.errors import ConfigError, GatewayError
from gateway.observability.tasktree import annotate
from gateway.protocol.headers import HeaderMap, RequestHead
from gateway.version import gateway_version
from gateway.xds import translate
from gateway.xds.compose import resource_of
from gateway.xds.subscriptions import TYPE_ORDER, SubscribedState

log = logging.getLogger("gateway.xds")

#: The discovery endpoint of each type (`/v3/discovery:NAME`).
_ENDPOINTS = {
    translate.CLUSTER: "clusters",
    translate.CLUSTER_LOAD_ASSIGNMENT: "endpoints",
    translate.LISTENER: "listeners",
    translate.ROUTE_CONFIGURATION: "routes",
}
#: A DiscoveryResponse larger than this is refused.
_MAX_RESPONSE = 16 << 20


class XdsRestSource(SubscribedState):
    def __init__(self, dynamic: Dynamic) -> None:
        assert dynamic.rest is not None
        self._rest: RestApiConfigSource = dynamic.rest
        super().__init__(f"rest:{self._rest.cluster}")
        self._node = node_of(dynamic)
        self._clusters: ClusterManager | None = None

    def bind(self, clusters: ClusterManager) -> None:
        """The gateway's clusters: the control plane is reached through one of them."""
        self._clusters = clusters

    async def watch(self, on_change: Callable[[], Awaitable[None]]) -> None:
        """Asks for each type in turn, every refresh_delay; applies what is news."""
        annotate("xds rest source", cluster=self._rest.cluster)
        while True:
            for type_url in TYPE_ORDER:
                try:
                    with trio.fail_after(self._rest.request_timeout):
                        news = await self._discover(type_url)
                except (GatewayError, ConfigError, OSError, ValueError, trio.TooSlowError) as exc:
                    log.warning("xDS %s from %s failed: %s", _ENDPOINTS[type_url], self.source, exc)
                    continue
                if news:
                    await on_change()
            await trio.sleep(self._rest.refresh_delay)

    async def _discover(self, type_url: str) -> bool:
        """Asks for one type; True if the answer is news (now pending)."""
        assert self._clusters is not None, "bound to the gateway's clusters before watching"
        sub = self.subscriptions[type_url]
        request: dict[str, object] = {
            "version_info": sub.accepted_version,
            "node": self._node,
            "resource_names": [],
            "type_url": type_url,
            "response_nonce": sub.nonce,
        }
        if (detail := self.error_detail(type_url)) is not None:
            request["error_detail"] = detail
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
            return self.retry_refused(type_url)
        if answer.status != 200:
            raise ValueError(f"status {answer.status}: {answer.body[:200]!r}")
        response = json.loads(answer.body)
        version_info = str(response.get("version_info", ""))
        sub.nonce = str(response.get("nonce", ""))
        where = f"{self.source} {_ENDPOINTS[type_url]}"
        resources = [
            resource_of(item, version_info, self.source, f"{where} resources[{i}]")
            for i, item in enumerate(response.get("resources", []))
        ]
        return self.offer(type_url, version_info, resources)


def node_of(dynamic: Dynamic) -> dict[str, str]:
    """The Node this gateway presents in discovery requests."""
    return {
        "id": dynamic.node.id,
        "cluster": dynamic.node.cluster,
        "user_agent_name": "gateway",
        "user_agent_version": gateway_version(),
    }
