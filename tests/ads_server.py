"""A small ADS control plane on grpcio (Envoy's AggregatedDiscoveryService, state of the
world and delta) for the ADS tests: it holds a snapshot per resource type, pushes it to
every stream that subscribed when it changes (delta streams get only what changed and
the names removed), and records every request (ACKs and NACKs)."""

import hashlib
import itertools
import json
import queue
import threading
from concurrent import futures
from typing import Any

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2, json_format

from gateway.xds import translate


class AdsServer(ads_pb2_grpc.AggregatedDiscoveryServiceServicer):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        self._streams: list[queue.Queue[str | None]] = []
        self._nonces = itertools.count(1)
        self.requests: list[
            discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest
        ] = []
        #: Delta: the names sent as removed, per type.
        self.removed: list[tuple[str, str]] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def set(self, type_url: str, version: str, resources: list[dict[str, Any]]) -> None:
        with self._lock:
            self._snapshot[type_url] = (version, resources)
            for stream in self._streams:
                stream.put(type_url)

    def nacks(self) -> list[discovery_pb2.DiscoveryRequest | discovery_pb2.DeltaDiscoveryRequest]:
        with self._lock:
            return [r for r in self.requests if r.HasField("error_detail")]

    def StreamAggregatedResources(self, request_iterator, context):  # gRPC's method name
        for type_url in self._follow(request_iterator):
            with self._lock:
                version, resources = self._snapshot.get(type_url, ("", []))
            yield discovery_pb2.DiscoveryResponse(
                version_info=version,
                type_url=type_url,
                nonce=str(next(self._nonces)),
                resources=[_pack(type_url, r) for r in resources],
            )

    def DeltaAggregatedResources(self, request_iterator, context):  # gRPC's method name
        sent: dict[str, dict[str, str]] = {}
        for type_url in self._follow(request_iterator):
            with self._lock:
                version, resources = self._snapshot.get(type_url, ("", []))
            now = {_name(r): (_version(r), r) for r in resources}
            before = sent.setdefault(type_url, {})
            changed = [
                discovery_pb2.Resource(name=name, version=v, resource=_pack(type_url, r))
                for name, (v, r) in now.items()
                if before.get(name) != v
            ]
            removed = [name for name in before if name not in now]
            if not changed and not removed:
                continue
            sent[type_url] = {name: v for name, (v, _) in now.items()}
            with self._lock:
                self.removed += [(type_url, name) for name in removed]
            yield discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=version,
                type_url=type_url,
                nonce=str(next(self._nonces)),
                resources=changed,
                removed_resources=removed,
            )

    def _follow(self, request_iterator):  # type: ignore[no-untyped-def]
        """Yields a type each time a stream should be sent it: when it subscribes, and
        when its snapshot changes; records the requests on the way."""
        pending: queue.Queue[str | None] = queue.Queue()
        subscribed: set[str] = set()
        with self._lock:
            self._streams.append(pending)

        def read() -> None:
            try:
                for request in request_iterator:
                    with self._lock:
                        self.requests.append(request)
                    if request.type_url not in subscribed:
                        subscribed.add(request.type_url)
                        pending.put(request.type_url)
            except grpc.RpcError:
                pass  # the client went away (a gateway stopping): the stream is over
            finally:
                pending.put(None)

        threading.Thread(target=read, daemon=True).start()
        try:
            while (type_url := pending.get()) is not None:
                if type_url in subscribed:
                    yield type_url
        finally:
            with self._lock:
                self._streams.remove(pending)


def _name(resource: dict[str, Any]) -> str:
    return resource.get("name") or resource["cluster_name"]


def _version(resource: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(resource, sort_keys=True).encode()).hexdigest()[:12]


def _pack(type_url: str, resource: dict[str, Any]) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(json_format.ParseDict(resource, translate.MESSAGES[type_url]()))
    return packed
