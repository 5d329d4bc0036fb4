"""A small ADS control plane on grpcio (Envoy's AggregatedDiscoveryService, state of the
world) for the ADS tests: it holds a snapshot per resource type, pushes it to every
stream that subscribed when it changes, and records every request (ACKs and NACKs)."""

import itertools
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
        self.requests: list[discovery_pb2.DiscoveryRequest] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        ads_pb2_grpc.add_AggregatedDiscoveryServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def set(self, type_url: str, version: str, resources: list[dict[str, Any]]) -> None:
        with self._lock:
            self._snapshot[type_url] = (version, resources)
            for stream in self._streams:
                stream.put(type_url)

    def nacks(self) -> list[discovery_pb2.DiscoveryRequest]:
        with self._lock:
            return [r for r in self.requests if r.HasField("error_detail")]

    def StreamAggregatedResources(self, request_iterator, context):  # gRPC's method name
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
                if type_url not in subscribed:
                    continue
                with self._lock:
                    version, resources = self._snapshot.get(type_url, ("", []))
                yield discovery_pb2.DiscoveryResponse(
                    version_info=version,
                    type_url=type_url,
                    nonce=str(next(self._nonces)),
                    resources=[_pack(type_url, r) for r in resources],
                )
        finally:
            with self._lock:
                self._streams.remove(pending)


def _pack(type_url: str, resource: dict[str, Any]) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(json_format.ParseDict(resource, translate.MESSAGES[type_url]()))
    return packed
