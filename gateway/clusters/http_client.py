"""A small HTTP client over a cluster's pool, for the gateway's own calls: filters that
call services (ext_authz, jwt_authn's JWKS), the xDS REST source, and (with `exchange`
on a connection of its own) the worker supervisor asking its workers. `lend` is the
borrowing every such call starts with (grpc_client.py's calls and ADS too)."""

import contextlib
from collections.abc import AsyncIterator

import attrs

from gateway.clusters.cluster import Cluster
from gateway.clusters.upstream import UpstreamStream
from gateway.errors import NoHealthyUpstream, UpstreamReset
from gateway.protocol.events import Data, EndStream, ResponseHeaders
from gateway.protocol.headers import HeaderMap, RequestHead


@attrs.frozen
class ServiceResponse:
    status: int
    headers: HeaderMap
    body: bytes
    #: The answer's trailers, if it had any (a gRPC call's status is there).
    trailers: HeaderMap | None = None


@contextlib.asynccontextmanager
async def lend(cluster: Cluster) -> AsyncIterator[UpstreamStream]:
    """An exchange's upstream stream (HTTP/1.1: a connection) to the host the cluster's
    load balancer picks, given back (or discarded) when the block ends. Raises
    NoHealthyUpstream, or what the pool raises (overflow, connect failure)."""
    host = cluster.choose_host()
    if host is None:
        raise NoHealthyUpstream()
    async with host.pool.borrow() as upstream:
        yield upstream


async def call_service(
    cluster: Cluster, request: RequestHead, *, max_body: int, body: bytes = b""
) -> ServiceResponse:
    """One request (with a small `body`, if any) to a host of `cluster`; the answer's body
    is kept up to `max_body` bytes. Raises GatewayError subclasses (connect failure,
    reset, no host); the caller owns the deadline, as always."""
    async with lend(cluster) as upstream:
        return await exchange(upstream, request, max_body=max_body, body=body)


async def exchange(
    upstream: UpstreamStream, request: RequestHead, *, max_body: int, body: bytes = b""
) -> ServiceResponse:
    """Sends `request` (and `body`) on `upstream` and reads the whole answer, its body
    kept up to `max_body` bytes; UpstreamReset if the answer does not come whole."""
    if body:
        request.headers.set("content-length", str(len(body)))
        await upstream.send_request_head(request, end_stream=False)
        await upstream.send_data(body)
        await upstream.send_end(None)
    else:
        await upstream.send_request_head(request, end_stream=True)
    event = await upstream.receive_event()
    if not isinstance(event, ResponseHeaders):
        raise UpstreamReset("service closed the connection before answering")
    head = event.head
    answer = b""
    trailers = None
    # An HTTP/2 answer may end with its head (a gRPC trailers-only answer): nothing follows.
    ended = event.end_stream
    while not ended:
        event = await upstream.receive_event()
        if isinstance(event, Data):
            answer += event.data[: max(max_body - len(answer), 0)]
        elif isinstance(event, EndStream):
            trailers, ended = event.trailers, True
        else:
            raise UpstreamReset("service closed the connection mid-answer")
    return ServiceResponse(head.status, head.headers, answer, trailers)
