"""ADS: one gRPC stream to the control plane carrying every resource type (Envoy's
Aggregated Discovery Service; state of the world, or incremental with `delta`), spoken
with the gateway's own HTTP/2 client: the stream is borrowed from the control plane
cluster's pool like any request, and gRPC messages are framed by hand (a 5-byte prefix),
so no blocking grpcio runs in the Trio loop.

The gateway subscribes to clusters, endpoints, listeners and routes (wildcard) on one
stream. Each DiscoveryResponse is an update of its type, applied or refused on its own;
the gateway then answers with a DiscoveryRequest naming the response's nonce: the new
version (ACK) or the old one with `error_detail` (NACK), as Envoy does. A broken stream is
opened again after a back-off; the last good config serves meanwhile.

Delta: a response carries only the resources that changed and the names removed; the
gateway keeps each type's resources by name, applies the delta to a copy, and keeps the
copy only if the update is taken. After a reconnect it tells the server the versions it
runs (`initial_resource_versions`).
"""

import logging
from collections.abc import Awaitable, Callable

import trio
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, json_format
from google.rpc import status_pb2

from gateway.clusters.http_client import lend
from gateway.clusters.manager import ClusterManager
from gateway.clusters.upstream import UpstreamStream
from gateway.config.model import Dynamic
from gateway.errors import ConfigError, GatewayError, UpstreamReset
from gateway.observability.tasktree import annotate
from gateway.protocol import grpc
from gateway.protocol.events import Data, ResponseHeaders
from gateway.xds import translate
from gateway.xds.compose import Resource, resource_of
from gateway.xds.rest_source import node_of
from gateway.xds.subscriptions import INVALID_ARGUMENT, TYPE_ORDER, SubscribedState

log = logging.getLogger("gateway.xds")

_SERVICE = "/envoy.service.discovery.v3.AggregatedDiscoveryService"
_METHOD = f"{_SERVICE}/StreamAggregatedResources"
_DELTA_METHOD = f"{_SERVICE}/DeltaAggregatedResources"
#: Back-off between attempts to open the stream, doubling up to the maximum.
_RETRY_INITIAL, _RETRY_MAX = 0.25, 10.0
#: A DiscoveryResponse larger than this breaks the stream.
_MAX_MESSAGE = 16 << 20


class XdsAdsSource(SubscribedState):
    def __init__(self, dynamic: Dynamic) -> None:
        assert dynamic.ads is not None
        self._cluster_name = dynamic.ads.cluster
        super().__init__(f"ads:{self._cluster_name}")
        self._node = json_format.ParseDict(node_of(dynamic), base_pb2.Node())
        self._clusters: ClusterManager | None = None
        self._delta = dynamic.ads.delta
        #: Delta: each type's resources by name, as accepted (version, resource).
        self._known: dict[str, dict[str, tuple[str, Resource]]] = {t: {} for t in TYPE_ORDER}
        #: Delta: a type's state with the last delta applied, and its version, until taken.
        self._candidates: dict[str, tuple[str, dict[str, tuple[str, Resource]]]] = {}

    def bind(self, clusters: ClusterManager) -> None:
        self._clusters = clusters

    async def watch(self, on_change: Callable[[], Awaitable[None]]) -> None:
        annotate("xds ads source", cluster=self._cluster_name)
        delay = _RETRY_INITIAL
        while True:
            try:
                await self._stream(on_change)
            except (GatewayError, ConfigError, OSError, ValueError) as exc:
                log.warning("ADS stream to %s ended: %s; again in %.2fs", self.source, exc, delay)
            await trio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _stream(self, on_change: Callable[[], Awaitable[None]]) -> None:
        assert self._clusters is not None, "bound to the gateway's clusters before watching"
        cluster = self._clusters.get(self._cluster_name)
        async with lend(cluster) as stream:
            method = _DELTA_METHOD if self._delta else _METHOD
            head = grpc.call_head(method, self._cluster_name)
            await stream.send_request_head(head, end_stream=False)
            for type_url in TYPE_ORDER:
                await self._request(stream, type_url, nonce="", first=True)
            buffer = b""
            while True:
                event = await stream.receive_event()
                if isinstance(event, ResponseHeaders):
                    if event.head.status != 200 or event.end_stream:
                        status = event.head.headers.get("grpc-status")
                        raise UpstreamReset(f"ADS refused: HTTP {event.head.status}, {status}")
                    continue
                if not isinstance(event, Data):
                    raise UpstreamReset("the control plane ended the ADS stream")
                messages, buffer = grpc.split_messages(buffer + event.data, _MAX_MESSAGE)
                for message in messages:
                    await self._handle(stream, message, on_change)

    async def _handle(
        self, stream: UpstreamStream, message: bytes, on_change: Callable[[], Awaitable[None]]
    ) -> None:
        if self._delta:
            delta = discovery_pb2.DeltaDiscoveryResponse.FromString(message)
            type_url, nonce = delta.type_url, delta.nonce
            if type_url not in self.subscriptions:
                return
            version, resources = self._apply_delta(delta)
        else:
            response = discovery_pb2.DiscoveryResponse.FromString(message)
            type_url, nonce, version = response.type_url, response.nonce, response.version_info
            if type_url not in self.subscriptions:
                return  # a type the gateway never asked for
            resources = [self._resource(any_, version) for any_ in response.resources]
        sub = self.subscriptions[type_url]
        sub.nonce = nonce
        if self.offer(type_url, version, resources):
            await on_change()
            # Refused updates of other types may have waited for this one (a cluster for
            # its endpoints): they are tried again.
            for other in TYPE_ORDER:
                if other != type_url and self.retry_refused(other):
                    await on_change()
            self._commit_deltas()
        await self._request(stream, type_url, nonce=nonce)

    def _commit_deltas(self) -> None:
        """Delta: a type whose update was taken now runs its candidate state."""
        for type_url, (version, state) in list(self._candidates.items()):
            if self.subscriptions[type_url].accepted_version == version:
                self._known[type_url] = state
                del self._candidates[type_url]

    def _apply_delta(
        self, delta: "discovery_pb2.DeltaDiscoveryResponse"
    ) -> tuple[str, list[Resource]]:
        """The type's resources once this delta is applied to the accepted ones (kept as
        the candidate until the update is taken), and a version naming that state."""
        state = dict(self._known[delta.type_url])
        for name in delta.removed_resources:
            state.pop(name, None)
        for item in delta.resources:
            state[item.name] = (item.version, self._resource(item.resource, item.version))
        version = delta.system_version_info or ",".join(
            f"{name}@{v}" for name, (v, _) in sorted(state.items())
        )
        self._candidates[delta.type_url] = (version, state)
        return version, [resource for _, resource in state.values()]

    def _resource(self, any_: any_pb2.Any, version: str) -> Resource:
        """An Any from the stream as the same resource dict the other sources give."""
        type_url = any_.type_url
        if type_url not in translate.MESSAGES:
            raise ConfigError([f"{self.source}: a resource of type {type_url!r}"])
        message = translate.MESSAGES[type_url]()
        any_.Unpack(message)
        body = json_format.MessageToDict(message, preserving_proto_field_name=True)
        return resource_of({"@type": type_url, **body}, version, self.source, self.source)

    async def _request(
        self, stream: UpstreamStream, type_url: str, nonce: str, first: bool = False
    ) -> None:
        """A (Delta)DiscoveryRequest: the subscription at first (wildcard), then each ACK
        or NACK."""
        sub = self.subscriptions[type_url]
        request: discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest
        if self._delta:
            request = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce)
            if first:
                request.node.CopyFrom(self._node)
                # What we still run, after a reconnect: the server sends only the rest.
                for name, (version, _) in self._known[type_url].items():
                    request.initial_resource_versions[name] = version
        else:
            request = discovery_pb2.DiscoveryRequest(
                version_info=sub.accepted_version,
                node=self._node,
                type_url=type_url,
                response_nonce=nonce,
            )
        if sub.error is not None:
            request.error_detail.CopyFrom(
                status_pb2.Status(code=INVALID_ARGUMENT, message=sub.error)
            )
        payload = request.SerializeToString()
        await stream.send_data(grpc.frame(payload))
