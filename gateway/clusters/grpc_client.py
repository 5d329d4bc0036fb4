"""A unary gRPC call the gateway makes itself to a service cluster, over its own HTTP/2
client: what the filters that ask a gRPC service share (ext_authz's Authorization/Check,
ratelimit's ShouldRateLimit).

The call borrows a stream from the cluster's pool like any request (so its connections,
health and breakers are the cluster's) and runs the exchange of `grpc_unary.py` on it.
Every failure but the caller's own cancellation is a `GrpcCallFailed` naming a gRPC
status, so a caller has one error to decide on (fail open or closed). The call runs in
the caller's task: a cancelled caller (a client that left, the route timeout) resets the
stream, and the service sees its call cancelled.
"""

import math
from typing import TypeVar

import trio
from google.protobuf.message import DecodeError, Message

from gateway.clusters.cluster import Cluster
from gateway.clusters.grpc_unary import GrpcCallFailed, exchange_unary
from gateway.clusters.http_client import lend
from gateway.errors import GatewayError
from gateway.protocol import grpc

M = TypeVar("M", bound=Message)


async def call_unary(
    cluster: Cluster, method: str, request: Message, response_type: type[M], *, max_message: int
) -> M:
    """Calls `method` ("/package.Service/Method") on a host of `cluster` with `request`;
    returns the answer as a `response_type`. The caller's deadline (its cancel scopes:
    the filter's timeout, the route's) is the call's, and the service is told it
    (grpc-timeout); an answer over `max_message` bytes is refused; any failure but the
    caller's cancellation is a GrpcCallFailed."""
    head = grpc.call_head(method, cluster.name)
    deadline = trio.current_effective_deadline()
    if deadline != math.inf:
        head.headers.set("grpc-timeout", grpc.format_timeout(deadline - trio.current_time()))
    try:
        async with lend(cluster) as stream:
            answer = await exchange_unary(stream, head, request.SerializeToString(), max_message)
    except GrpcCallFailed:
        raise
    except GatewayError as exc:  # no host, connect failure, reset
        raise GrpcCallFailed(grpc.Status.UNAVAILABLE, exc.body) from exc
    try:
        return response_type.FromString(answer)
    except DecodeError as exc:
        raise GrpcCallFailed(grpc.Status.INTERNAL, f"undecodable answer: {exc}") from exc
