"""The router: the terminal HTTP filter. Route -> cluster -> host -> pooled connection -> relay.

Everything a request does upstream happens inside one cancel scope: the route timeout.
When it expires, or when the client goes away (the connection cancels the stream's scope),
the cancellation lands wherever the exchange is waiting (connecting, writing the body,
reading the response) and the pool closes the borrowed connection on the way out. No
timeout is passed down as a number; whoever owns a deadline owns the scope.

The request body is uploaded by a second task while this one reads the response, because
an upstream may answer (e.g. 413) before it has read the whole body. When the response is
complete the upload is cancelled; an unfinished upload leaves h11 short of DONE, so the
pool will not reuse that connection.
"""

import math
import random
import time

import trio

from gateway.clusters.cluster import Cluster, Host
from gateway.clusters.manager import ClusterManager
from gateway.clusters.upstream_h1 import UpstreamConnection
from gateway.config.model import Redirect, Route
from gateway.errors import NoHealthyUpstream, NoRouteFound, UpstreamReset, UpstreamTimeout
from gateway.http.active_stream import ActiveStream
from gateway.http.events import NEED_DATA, ConnectionEnded, Data, EndStream, ResponseHeaders
from gateway.http.filter import LocalReply
from gateway.http.headers import (
    RequestHead,
    ResponseHead,
    mutate_request,
    mutate_response,
    strip_hop_by_hop,
)
from gateway.http.route_table import RouteEntry
from gateway.trio_util import raise_single


def redirect_location(redirect: Redirect, route: Route, request: RequestHead) -> str:
    """The Location header for a redirect route."""
    scheme = "https" if redirect.https_redirect else (redirect.scheme_redirect or request.scheme)
    host = redirect.host_redirect or request.authority
    if redirect.port_redirect is not None or redirect.https_redirect:
        host = host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() else host
        if redirect.port_redirect is not None:
            host = f"{host}:{redirect.port_redirect}"
    path, _, query = request.path.partition("?")
    if redirect.path_redirect is not None:
        path = redirect.path_redirect
    elif redirect.prefix_rewrite is not None and route.match.prefix is not None:
        path = redirect.prefix_rewrite + path[len(route.match.prefix) :]
    if query and not redirect.strip_query:
        path = f"{path}?{query}"
    return f"{scheme}://{host}{path}"


def prepare_upstream_request(stream: ActiveStream, entry: RouteEntry) -> None:
    """Rewrites the request for the upstream: path and host rewrites, configured header
    mutations, hop-by-hop removal, and framing h11 will re-create from the head."""
    request, route, vhost = stream.request, entry.config, entry.virtual_host
    if route.prefix_rewrite is not None and route.match.prefix is not None:
        request.headers.set("x-envoy-original-path", request.path)
        request.path = route.prefix_rewrite + request.path[len(route.match.prefix) :]
        if not request.path.startswith("/"):
            request.path = "/" + request.path
    if route.host_rewrite is not None:
        request.authority = route.host_rewrite
    headers = request.headers
    strip_hop_by_hop(headers)
    # The gateway answers Expect: 100-continue itself (Envoy's default), so the upstream
    # must not wait for a 100 that nobody will relay.
    headers.remove("expect")
    headers.set("host", request.authority)
    if stream.has_request_body and "content-length" not in headers:
        headers.set("transfer-encoding", "chunked")
    mutate_request(headers, vhost)
    mutate_request(headers, route)


class RouterFilter:
    def __init__(self, clusters: ClusterManager) -> None:
        self._clusters = clusters

    async def __call__(self, stream: ActiveStream) -> None:
        entry = stream.route
        if entry is None:
            stream.connection.manager.stats.no_route.inc()
            raise NoRouteFound()
        route = entry.config
        if route.direct_response is not None:
            d = route.direct_response
            await stream.send_local_reply(
                LocalReply(d.status, d.body, {"content-type": d.content_type} if d.body else {})
            )
            return
        if route.redirect is not None:
            location = redirect_location(route.redirect, route, stream.request)
            await stream.send_local_reply(
                LocalReply(route.redirect.response_code, "", {"location": location})
            )
            return
        cluster = self._clusters.get(self._cluster_name(route))
        stream.info.cluster_name = cluster.name
        prepare_upstream_request(stream, entry)
        with trio.move_on_after(route.timeout or math.inf) as timeout_scope:
            await self._forward(stream, cluster, entry)
        if timeout_scope.cancelled_caught:
            cluster.stats.upstream_rq_timeout.inc()
            raise UpstreamTimeout()

    @staticmethod
    def _cluster_name(route: Route) -> str:
        if route.cluster is not None:
            return route.cluster
        assert route.weighted_clusters is not None
        weights = [w.weight for w in route.weighted_clusters]
        return random.choices(route.weighted_clusters, weights)[0].name

    async def _forward(self, stream: ActiveStream, cluster: Cluster, entry: RouteEntry) -> None:
        host = cluster.choose_host()
        if host is None:
            cluster.stats.upstream_cx_none_healthy.inc()
            raise NoHealthyUpstream()
        stream.info.upstream_host = str(host)
        stats, host_stats = cluster.stats, host.stats
        stats.upstream_rq_total.inc()
        stats.upstream_rq_active.inc()
        host_stats.rq_total += 1
        host_stats.rq_active += 1
        started = time.monotonic()
        status = 0
        try:
            stream.info.state = "waiting for upstream connection"
            async with host.pool.borrow() as conn:
                status = await self._exchange(stream, conn, entry, host)
        except UpstreamTimeout:
            host_stats.rq_timeout += 1
            raise
        finally:
            stats.upstream_rq_active.dec()
            host_stats.rq_active -= 1
            stats.upstream_rq_time.record((time.monotonic() - started) * 1000)
            if status:
                stats.record_response(status)
            if 0 < status < 500:
                host_stats.rq_success += 1
            else:
                host_stats.rq_error += 1

    async def _exchange(
        self, stream: ActiveStream, conn: UpstreamConnection, entry: RouteEntry, host: Host
    ) -> int:
        codec = conn.codec
        stream.info.state = "sending request upstream"
        head_bytes = codec.send_request_head(stream.request)
        if not stream.has_request_body:
            await conn.send(head_bytes + codec.send_end())
            return await self._relay_response(stream, conn, entry)
        await conn.send(head_bytes)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._upload, stream, conn, name=f"upload to {host}")
                status = await self._relay_response(stream, conn, entry)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise_single(group)
        return status

    @staticmethod
    async def _upload(stream: ActiveStream, conn: UpstreamConnection) -> None:
        codec = conn.codec
        while (chunk := await stream.receive_body()) is not None:
            if chunk:
                await conn.send(codec.send_data(chunk))
        await conn.send(codec.send_end())

    @staticmethod
    async def _relay_response(
        stream: ActiveStream, conn: UpstreamConnection, entry: RouteEntry
    ) -> int:
        info = stream.info
        info.state = "waiting for upstream response headers"
        event = await conn.receive_event()
        if not isinstance(event, ResponseHeaders):
            raise UpstreamReset("upstream closed the connection before responding")
        info.upstream_service_time_ms = info.duration_ms()
        head: ResponseHead = event.head
        strip_hop_by_hop(head.headers)
        head.headers.set("x-envoy-upstream-service-time", str(info.upstream_service_time_ms))
        mutate_response(head.headers, entry.virtual_host)
        mutate_response(head.headers, entry.config)
        # Peek without I/O: if the body (or its end) is already here, it leaves with the head.
        nxt = conn.codec.next_event()
        if isinstance(nxt, EndStream):
            await stream.encode_headers(head, end_stream=True)
            return head.status
        await stream.encode_headers(head, end_stream=False, flush=nxt is NEED_DATA)
        info.state = "streaming response body"
        while True:
            event = nxt if nxt is not NEED_DATA else await conn.receive_event()
            nxt = NEED_DATA
            if isinstance(event, Data):
                await stream.encode_data(event.data, end_stream=False)
            elif isinstance(event, EndStream):
                await stream.encode_data(b"", end_stream=True)
                return head.status
            elif isinstance(event, ConnectionEnded):
                raise UpstreamReset("upstream closed the connection mid-response")
            else:  # pragma: no cover - h11 would have raised
                raise UpstreamReset(f"unexpected upstream event {event!r}")
