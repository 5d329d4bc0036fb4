"""The router: the terminal HTTP filter. Route -> cluster -> host -> pooled connection -> relay.

Everything a request does upstream happens inside one cancel scope: the route timeout.
When it expires, or when the client goes away (the connection cancels the stream's scope),
the cancellation lands wherever the exchange is waiting (connecting, writing the body,
reading the response) and the pool closes the borrowed connection on the way out. No
timeout is passed down as a number; whoever owns a deadline owns the scope.

The request body is uploaded by a second task while this one reads the response, because
an upstream may answer (e.g. 413) before it has read the whole body. When the response is
complete the upload is cancelled; an unfinished upload leaves the codec short of a finished
exchange, so the pool will not reuse that connection.
"""

import base64
import contextlib
import math
import os
from collections.abc import Sequence
from http.cookies import SimpleCookie
from typing import Protocol

import attrs
import trio

from gateway.clusters.cluster import Cluster
from gateway.clusters.host import Host
from gateway.clusters.load_balancer import combine_hashes
from gateway.clusters.manager import ClusterManager
from gateway.clusters.upstream import UpstreamStream
from gateway.clusters.upstream_h1 import UpstreamConnection
from gateway.config.model import (
    HashPolicy,
    HttpConnectionManagerConfig,
    HttpConnectionManagerOptions,
    Redirect,
    Route,
)
from gateway.errors import (
    GatewayError,
    NoHealthyUpstream,
    NoRouteFound,
    UpgradeRejected,
    UpstreamConnectError,
    UpstreamOverflow,
    UpstreamRefusedStream,
    UpstreamReset,
    UpstreamTimeout,
)
from gateway.io.byte_stream import ByteStream
from gateway.io.trio_util import raise_single
from gateway.io.tunnel import SocketEndpoint, TunnelEndpoint, TunnelResult, run_tunnel
from gateway.observability.stats import Counter, Gauge
from gateway.observability.stream_info import StreamInfo
from gateway.observability.tracing.span import Span
from gateway.protocol import grpc
from gateway.protocol.codec_h1 import ClientEvent
from gateway.protocol.events import NEED_DATA, Data, EndStream, ResponseHeaders
from gateway.protocol.headers import (
    HeaderMap,
    LocalReply,
    RequestHead,
    ResponseHead,
    strip_hop_by_hop,
)
from gateway.router.attempt_trace import AttemptTrace, end_tunnel, start_tunnel
from gateway.router.retry import BodySource, RequestBodyBuffer, RetryableResponse, RetryState
from gateway.router.route_table import RouteEntry, mutate_request, mutate_response


class DownstreamStream(Protocol):
    """The request the router serves, as the HCM's ActiveStream offers it (Envoy's
    StreamDecoderFilterCallbacks): the request and what is known of it, its body, and the
    way back to the client through the encode filters."""

    request: RequestHead
    info: StreamInfo
    is_grpc: bool
    #: The request's trailers, once its body was read to the end (None if it had none).
    request_trailers: HeaderMap | None

    @property
    def route(self) -> RouteEntry | None:
        """The matched route; once matched, `info.cluster_name` holds the cluster it
        chose (a weighted pick, made once per request)."""

    @property
    def has_request_body(self) -> bool: ...

    @property
    def response_started(self) -> bool: ...

    async def receive_body(self) -> bytes | None: ...

    def body_ready(self) -> bool: ...

    async def send_local_reply(self, reply: LocalReply) -> None: ...

    async def encode_headers(
        self, head: ResponseHead, end_stream: bool, flush: bool = True
    ) -> None: ...

    async def encode_data(self, data: bytes, end_stream: bool, flush: bool = True) -> None: ...

    async def encode_trailers(self, trailers: HeaderMap) -> None: ...

    def stop_watching_idle(self) -> None: ...

    async def accept_upgrade(self, head: ResponseHead) -> TunnelEndpoint: ...

    def end_tunnel(self, cut: bool) -> None: ...


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


def prepare_upstream_request(request: RequestHead, entry: RouteEntry) -> None:
    """Rewrites the request for the upstream: path and host rewrites and configured header
    mutations (hop-by-hop headers left when the request entered). Framing is the upstream
    codec's business."""
    route, vhost = entry.config, entry.virtual_host
    if route.prefix_rewrite is not None and route.match.prefix is not None:
        request.headers.set("x-envoy-original-path", request.path)
        request.path = route.prefix_rewrite + request.path[len(route.match.prefix) :]
        if not request.path.startswith("/"):
            request.path = "/" + request.path
    if route.host_rewrite is not None:
        request.authority = route.host_rewrite
    headers = request.headers
    # The gateway answers Expect: 100-continue itself (Envoy's default), so the upstream
    # must not wait for a 100 that nobody will relay.
    headers.remove("expect")
    mutate_request(headers, vhost)
    mutate_request(headers, route)


def allowed_upgrades(route: Route, listener: HttpConnectionManagerOptions) -> Sequence[str]:
    """The upgrades ("websocket") a route tunnels: its own list, else its listener's."""
    return route.upgrade if route.upgrade is not None else listener.upgrade


def upgrade_request(request: RequestHead) -> None:
    """The HTTP/1.1 Upgrade request for the upstream, also for an HTTP/2 extended CONNECT
    (RFC 8441 8: the gateway supplies the handshake fields HTTP/2 clients leave out)."""
    assert request.upgrade is not None
    headers = request.headers
    if request.method == "CONNECT":
        request.method = "GET"
    headers.set("connection", "upgrade")
    headers.set("upgrade", request.upgrade)
    if request.upgrade == "websocket":
        if "sec-websocket-version" not in headers:
            headers.set("sec-websocket-version", "13")
        if "sec-websocket-key" not in headers:
            headers.set("sec-websocket-key", base64.b64encode(os.urandom(16)).decode())


def request_hash(policies: list[HashPolicy], headers: HeaderMap, downstream_ip: str) -> int | None:
    """The request's hash for ring_hash and maglev, from the route's hash policies."""
    values: list[bytes] = []
    for policy in policies:
        value: str | None
        if policy.header is not None:
            value = headers.get(policy.header)
        elif policy.cookie is not None:
            cookies = SimpleCookie("; ".join(headers.get_all("cookie")))
            morsel = cookies.get(policy.cookie)
            value = morsel.value if morsel is not None else None
        else:
            value = downstream_ip
        if value is not None:
            values.append(value.encode())
            if policy.terminal:
                break
    return combine_hashes(values)


def upstream_timeout(route: Route, request: RequestHead, is_grpc: bool) -> float:
    """The budget for the upstream exchange: the route timeout, or for gRPC the smaller of
    it and the client's grpc-timeout (capped by the route's max_grpc_timeout)."""
    timeout = route.timeout or math.inf
    if is_grpc:
        client = grpc.parse_timeout(request.headers.get("grpc-timeout"))
        if client is not None:
            if route.max_grpc_timeout:  # "0s" means no cap, as in Envoy
                client = min(client, route.max_grpc_timeout)
            timeout = min(timeout, client)
    return timeout


class RouterStats(Protocol):
    """The connection manager's stats (`http.NAME.*`) the router counts in."""

    @property
    def no_route(self) -> Counter: ...

    @property
    def downstream_cx_upgrades_total(self) -> Counter: ...

    @property
    def downstream_cx_upgrades_active(self) -> Gauge: ...

    @property
    def downstream_cx_upgrade_rx_bytes_total(self) -> Counter: ...

    @property
    def downstream_cx_upgrade_tx_bytes_total(self) -> Counter: ...


#: The most request body sent with the head, before the response is read: a body that
#: waited for the upstream's window here would hold up reading its early answer.
_SENT_WITH_HEAD = 16384


@attrs.define
class BodyAhead:
    """A request body whose start was read before the exchange: where the rest comes from,
    the chunks read, and whether they are all of it."""

    source: BodySource
    chunks: list[bytes] = attrs.Factory(list)
    ended: bool = False


class RouterFilter:
    """The router of one connection manager: its clusters, its listener's upgrade
    settings, and its stats."""

    def __init__(
        self, clusters: ClusterManager, listener: HttpConnectionManagerConfig, stats: RouterStats
    ) -> None:
        self._clusters = clusters
        self._listener = listener
        self._stats = stats

    async def __call__(self, stream: DownstreamStream) -> None:
        entry = stream.route
        if entry is None:
            self._stats.no_route.inc()
            raise NoRouteFound()
        route = entry.config
        if route.direct_response is not None or route.redirect is not None:
            await stream.send_local_reply(self._route_reply(stream, entry))
            return
        if route.match.connect_matcher:
            await self._terminate_connect(stream, entry)
            return
        tunnel = self._accepts_upgrade(stream, entry)
        cluster = self._clusters.get(stream.info.cluster_name)
        prepare_upstream_request(stream.request, entry)
        deadline = trio.current_time() + upstream_timeout(route, stream.request, stream.is_grpc)
        await self._forward(stream, cluster, entry, deadline, tunnel)

    def _accepts_upgrade(self, stream: DownstreamStream, entry: RouteEntry) -> bool:
        """Whether this request becomes a tunnel. An upgrade the route does not allow is
        refused (403) or forwarded as an ordinary request, never silently tunnelled."""
        request = stream.request
        if request.upgrade is None:
            return False
        listener = self._listener
        if request.upgrade in allowed_upgrades(entry.config, listener):
            return True
        if request.multiplexed or listener.upgrade_not_allowed == "reject":
            raise UpgradeRejected()  # an extended CONNECT has no ordinary meaning to forward
        request.upgrade = None  # Upgrade and Connection are hop-by-hop: stripped as usual
        return False

    @staticmethod
    def _route_reply(stream: DownstreamStream, entry: RouteEntry) -> LocalReply:
        """A direct response or redirect, with the vhost's and route's response headers."""
        route = entry.config
        headers = HeaderMap()
        status: int
        if route.redirect is not None:
            status, body = route.redirect.response_code, ""
            headers.set("location", redirect_location(route.redirect, route, stream.request))
        else:
            assert route.direct_response is not None
            status, body = route.direct_response.status, route.direct_response.body
            if body:
                headers.set("content-type", route.direct_response.content_type)
        mutate_response(headers, entry.virtual_host)
        mutate_response(headers, route)
        return LocalReply(status, body, dict(headers))

    async def _forward(
        self,
        stream: DownstreamStream,
        cluster: Cluster,
        entry: RouteEntry,
        deadline: float,
        tunnel: bool,
    ) -> None:
        """Attempts the exchange, retrying as the route's retry policy allows, all within
        the route timeout (`deadline`)."""
        route = entry.config
        retry = self._retry_state(stream, cluster, route) if not tunnel else None
        hash_key = (
            request_hash(route.hash_policy, stream.request.headers, stream.info.downstream_ip)
            if route.hash_policy
            else None
        )
        status = 0
        host: Host | None = None
        try:
            with trio.move_on_at(deadline) as timeout_scope:
                while True:
                    host = cluster.choose_host(hash_key, retry.tried if retry else ())
                    if host is None:
                        cluster.stats.upstream_cx_none_healthy.inc()
                        raise NoHealthyUpstream()
                    try:
                        status = await self._attempt(
                            stream, cluster, host, entry, deadline, tunnel, timeout_scope, retry
                        )
                        break
                    except RetryableResponse:
                        pass
                    except GatewayError as exc:
                        if retry is None or stream.response_started or not retry.retries_error(exc):
                            raise
                    assert retry is not None
                    retry.tried += (host,)
                    await retry.back_off()
            if timeout_scope.cancelled_caught:
                cluster.stats.upstream_rq_timeout.inc()
                if host is not None:
                    host.stats.rq_timeout += 1
                    if cluster.outlier is not None:
                        cluster.outlier.report_local_failure(host)
                raise UpstreamTimeout()
        finally:
            if retry is not None:
                retry.finish(status)

    @staticmethod
    def _retry_state(stream: DownstreamStream, cluster: Cluster, route: Route) -> RetryState | None:
        policy = route.retry_policy
        if policy is None:
            return None
        body = None
        if stream.has_request_body:
            body = RequestBodyBuffer(stream, route.per_request_buffer_limit_bytes)
        return RetryState(policy, cluster, stream.request.method, stream.is_grpc, body)

    async def _attempt(
        self,
        stream: DownstreamStream,
        cluster: Cluster,
        host: Host,
        entry: RouteEntry,
        deadline: float,
        tunnel: bool,
        timeout_scope: trio.CancelScope,
        retry: RetryState | None,
    ) -> int:
        """One try on `host`: borrow an upstream stream, exchange, give it back."""
        if not cluster.resources.requests.can_create():
            cluster.stats.upstream_rq_pending_overflow.inc()
            raise UpstreamOverflow()
        stream.info.upstream_host = str(host)
        stats, host_stats = cluster.stats, host.stats
        stats.upstream_rq_total.inc()
        stats.upstream_rq_active.inc()
        cluster.resources.requests.inc()
        host_stats.rq_total += 1
        host_stats.rq_active += 1
        started = trio.current_time()
        status = 0
        failure: BaseException | None = None
        parent = stream.info.span
        trace = (
            AttemptTrace(parent, stream.request, cluster, host, stream.is_grpc, retry)
            if parent is not None
            else None
        )
        per_try = retry.per_try_timeout if retry is not None else 0.0
        try:
            # No per-try timeout (the usual case): no scope of its own, the route's bounds it.
            try_scope = (
                trio.CancelScope(deadline=trio.current_time() + per_try) if per_try else None
            )
            with try_scope or contextlib.nullcontext():
                # A retry replays its buffer; the stream's own body is gone once read, so
                # only the buffer still knows whether there was one.
                body = retry.body.reader() if retry and retry.body else stream
                has_body = retry.body is not None if retry else stream.has_request_body
                # Read before borrowing: an HTTP/2 upstream stream's id is taken when it is
                # lent, and its HEADERS must leave before any later stream's.
                ahead = await self._read_ahead(body) if has_body and not tunnel else None
                stream.info.state = "waiting for upstream connection"
                if trace is not None:
                    trace.wait_for_connection()
                async with host.pool.borrow() as upstream:
                    request = stream.request
                    if trace is not None:
                        trace.connected(request.headers)
                    if stream.is_grpc and deadline != math.inf:
                        # Forward what is left of the client's deadline, as Envoy does.
                        remaining = grpc.format_timeout(deadline - trio.current_time())
                        request.headers.set("grpc-timeout", remaining)
                    if retry is not None:
                        request.headers.set("x-envoy-attempt-count", str(retry.attempt))
                    if tunnel:
                        status = await self._tunnel(stream, upstream, entry, timeout_scope, trace)
                    else:
                        status = await self._exchange(
                            stream,
                            upstream,
                            entry,
                            host,
                            ahead,
                            retry,
                            try_scope,
                        )
            if try_scope is not None and try_scope.cancelled_caught:
                stats.upstream_rq_per_try_timeout.inc()
                host_stats.rq_timeout += 1
                raise UpstreamTimeout()
        except RetryableResponse as retried:
            status, failure = retried.status, retried
            raise
        except (UpstreamConnectError, UpstreamReset, UpstreamTimeout) as exc:
            failure = exc
            if cluster.outlier is not None:
                cluster.outlier.report_local_failure(host)
            raise
        except BaseException as exc:  # for the attempt's span: cancelled, or a bug
            failure = exc
            raise
        finally:
            if trace is not None:
                trace.end(status, failure, stream.info)
            # Its traceback holds this frame: a local naming it would be a cycle, keeping
            # the request and its connection until the cyclic GC runs.
            failure = None
            stats.upstream_rq_active.dec()
            cluster.resources.requests.dec()
            host_stats.rq_active -= 1
            stats.upstream_rq_time.record((trio.current_time() - started) * 1000)
            if status:
                stats.record_response(status)
                if cluster.outlier is not None:
                    cluster.outlier.report_status(host, status)
            if 0 < status < 500:
                host_stats.rq_success += 1
            else:
                host_stats.rq_error += 1
        return status

    async def _exchange(
        self,
        stream: DownstreamStream,
        upstream: UpstreamStream,
        entry: RouteEntry,
        host: Host,
        body: BodyAhead | None,
        retry: RetryState | None,
        try_scope: trio.CancelScope | None,
    ) -> int:
        stream.info.state = "sending request upstream"
        if body is None:
            await upstream.send_request_head(stream.request, end_stream=True)
            return await self._relay_response(stream, upstream, entry, retry, try_scope)
        if body.ended:  # here whole: it leaves with the head, in one write, no upload task
            await upstream.send_request(
                stream.request, b"".join(body.chunks), stream.request_trailers
            )
            return await self._relay_response(stream, upstream, entry, retry, try_scope)
        await upstream.send_request_head(stream.request, end_stream=False)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._upload, stream, body, upstream, name=f"upload to {host}")
                status = await self._relay_response(stream, upstream, entry, retry, try_scope)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise_single(group)
        return status

    @staticmethod
    async def _read_ahead(body: BodySource) -> BodyAhead:
        """What the client sent with its head (a gRPC call's message, a small POST's body),
        taken without waiting for more: usually the whole body."""
        ahead = BodyAhead(body)
        size = 0
        while size < _SENT_WITH_HEAD and body.body_ready():
            chunk = await body.receive_body()
            if chunk is None:
                ahead.ended = True
                break
            ahead.chunks.append(chunk)
            size += len(chunk)
        return ahead

    async def _tunnel(
        self,
        stream: DownstreamStream,
        upstream: UpstreamStream,
        entry: RouteEntry,
        timeout_scope: trio.CancelScope,
        trace: AttemptTrace | None,
    ) -> int:
        """Upgrade upstream over HTTP/1.1, then (on 101) join the two sides in a tunnel.
        A refusal (any other status) goes back to the client as an ordinary response."""
        request, info = stream.request, stream.info
        upgrade_request(request)
        info.state = "waiting for upstream upgrade"
        await upstream.send_request_head(request, end_stream=True)
        event = await upstream.receive_event()
        if not isinstance(event, ResponseHeaders) or event.head.status != 101:
            if isinstance(upstream, UpstreamConnection):
                # Servers that refuse an upgrade may keep the connection in a state fit for
                # nothing else: never lend it again.
                upstream.keep_alive = False
            return await self._relay_response(stream, upstream, entry, first=event)
        if not isinstance(upstream, UpstreamConnection):
            raise UpstreamReset("upgrades need an HTTP/1.1 upstream")
        # The route timeout bounds the handshake; the tunnel has its own idle and max limits.
        timeout_scope.deadline = math.inf
        await self._join(
            stream,
            entry,
            event.head,
            upstream.tunnel_endpoint(),
            upstream.host,
            trace.span if trace is not None else None,
        )
        return 101

    async def _terminate_connect(self, stream: DownstreamStream, entry: RouteEntry) -> None:
        """CONNECT on a `connect_matcher` route (Envoy's CONNECT termination): a TCP
        connection to a host of the route's cluster, `200` to the client, then the bytes
        both ways."""
        info = stream.info
        cluster = self._clusters.get(info.cluster_name)
        host = cluster.choose_host()
        if host is None:
            cluster.stats.upstream_cx_none_healthy.inc()
            raise NoHealthyUpstream()
        info.upstream_host = str(host)
        info.state = "connecting for CONNECT"
        upstream = await cluster.open_connection(host)
        try:
            await self._join(
                stream, entry, ResponseHead(200, HeaderMap()), upstream, str(host), info.span
            )
        finally:
            upstream.close_now()
            cluster.stats.upstream_cx_active.dec()

    async def _join(
        self,
        stream: DownstreamStream,
        entry: RouteEntry,
        head: ResponseHead,
        upstream: SocketEndpoint | ByteStream,
        upstream_label: str,
        parent: Span | None,
    ) -> None:
        """Accepts the tunnel downstream with `head` (a 101, or CONNECT's 200) and joins
        the two sides until either ends or the route's tunnel limits cut it; a traced
        request's tunnel is a child span of `parent`."""
        request, info = stream.request, stream.info
        stream.stop_watching_idle()
        info.upstream_service_time_ms = info.duration_ms()
        mutate_response(head.headers, entry.virtual_host)
        mutate_response(head.headers, entry.config)
        downstream = await stream.accept_upgrade(head)
        request.headers = HeaderMap()  # the handshake is done; a long tunnel need not keep it
        info.response_code = 200 if request.multiplexed else head.status
        info.state = "tunnel"
        stats = self._stats
        stats.downstream_cx_upgrades_total.inc()
        stats.downstream_cx_upgrades_active.inc()
        route = entry.config
        result = TunnelResult()
        span = start_tunnel(parent) if parent is not None else None
        try:
            await run_tunnel(
                downstream,
                upstream if isinstance(upstream, SocketEndpoint) else SocketEndpoint(upstream, b""),
                result,
                idle_timeout=route.tunnel_idle_timeout,
                max_duration=route.tunnel_max_duration,
                describe={
                    "peer": info.downstream_remote,
                    "path": info.path,
                    "upstream": upstream_label,
                },
            )
        finally:
            stats.downstream_cx_upgrades_active.dec()
            stats.downstream_cx_upgrade_rx_bytes_total.inc(result.sent_up)
            stats.downstream_cx_upgrade_tx_bytes_total.inc(result.sent_down)
            # The handshake has no body: the tunnel's bytes are the exchange's bytes.
            info.bytes_received = result.sent_up
            info.bytes_sent = result.sent_down
            if span is not None:
                end_tunnel(span, result)
        if result.cut:
            info.add_flag(result.cut)
        stream.end_tunnel(cut=bool(result.cut))

    @staticmethod
    async def _upload(stream: DownstreamStream, body: BodyAhead, upstream: UpstreamStream) -> None:
        for first in body.chunks:
            await upstream.send_data(first)
        while (chunk := await body.source.receive_body()) is not None:
            if chunk:
                await upstream.send_data(chunk)
        await upstream.send_end(stream.request_trailers)

    @staticmethod
    async def _relay_response(
        stream: DownstreamStream,
        upstream: UpstreamStream,
        entry: RouteEntry,
        retry: RetryState | None = None,
        try_scope: trio.CancelScope | None = None,
        first: ClientEvent | None = None,
    ) -> int:
        info = stream.info
        info.state = "waiting for upstream response headers"
        event = first if first is not None else await upstream.receive_event()
        if not isinstance(event, ResponseHeaders):
            if upstream.refused:
                raise UpstreamRefusedStream("upstream refused the stream")
            raise UpstreamReset("upstream closed the stream before responding")
        head: ResponseHead = event.head
        if retry is not None and retry.retries_response(head):
            raise RetryableResponse(head)
        if try_scope is not None:
            # Committed to this answer: from here only the route timeout bounds it.
            try_scope.deadline = math.inf
        info.upstream_service_time_ms = info.duration_ms()
        strip_hop_by_hop(head.headers)
        head.headers.set("x-envoy-upstream-service-time", str(info.upstream_service_time_ms))
        mutate_response(head.headers, entry.virtual_host)
        mutate_response(head.headers, entry.config)
        if event.end_stream:  # e.g. a gRPC trailers-only response
            await stream.encode_headers(head, end_stream=True)
            return head.status
        # Peek without I/O: if the body (or its end) is already here, it leaves with the head.
        nxt = upstream.next_event_nowait()
        if isinstance(nxt, EndStream) and nxt.trailers is None:
            await stream.encode_headers(head, end_stream=True)
            return head.status
        await stream.encode_headers(head, end_stream=False, flush=nxt is NEED_DATA)
        info.state = "streaming response body"
        while True:
            event = nxt if nxt is not NEED_DATA else await upstream.receive_event()
            nxt = NEED_DATA
            if isinstance(event, Data):
                # If the end is already here too, the last chunk carries it: one write.
                nxt = upstream.next_event_nowait()
                if isinstance(nxt, EndStream) and nxt.trailers is None:
                    await stream.encode_data(event.data, end_stream=True)
                    return head.status
                # Trailers here too (a gRPC call's message and status): they leave together.
                await stream.encode_data(
                    event.data, end_stream=False, flush=not isinstance(nxt, EndStream)
                )
            elif isinstance(event, EndStream):
                if event.trailers is not None:
                    await stream.encode_trailers(event.trailers)
                else:
                    await stream.encode_data(b"", end_stream=True)
                return head.status
            else:
                raise UpstreamReset("upstream closed the stream mid-response")
