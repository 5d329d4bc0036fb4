"""tcp_proxy: the L4 network filter. Bytes both ways between the client and one host of a
cluster, never parsed.

The host is picked by the cluster's load balancer and connected through the cluster's
transport socket (TCP, or TLS with `[clusters.NAME.tls]`) within its connect_timeout,
trying up to `max_connect_attempts` hosts. Then the connection is a tunnel
(`gateway/io/tunnel.py`, shared with WebSocket): two pumps, half-close passed on, the
idle timeout as a moving deadline, and either side breaking ends both. The upstream
socket is closed in `finally`, so a client that goes away takes its upstream with it.
"""

import logging

import attrs

from gateway.clusters.cluster import Cluster
from gateway.clusters.manager import ClusterManager
from gateway.config.model import Cluster as ClusterConfig
from gateway.config.model import TcpProxy
from gateway.errors import (
    ClusterNotFound,
    DownstreamDisconnect,
    UpstreamConnectError,
    UpstreamReset,
)
from gateway.io.byte_stream import ByteStream
from gateway.io.tunnel import SocketEndpoint, TunnelResult, run_tunnel
from gateway.listeners import proxy_protocol
from gateway.listeners.network_filter import ConnectionInfo, NextFilter
from gateway.observability.stats import Counter, StatsStore, create_stats, describe

log = logging.getLogger("gateway.tcp_proxy")


@attrs.define
class TcpProxyStats:
    """Envoy's `tcp.<stat_prefix>.*`."""

    downstream_cx_total: Counter
    downstream_cx_no_route: Counter
    downstream_cx_rx_bytes_total: Counter
    downstream_cx_tx_bytes_total: Counter
    upstream_connect_attempts_exceeded: Counter
    idle_timeout: Counter


describe(
    "tcp",
    {
        "downstream_cx_total": "Connections tcp_proxy handled.",
        "downstream_cx_no_route": "Connections closed: the cluster had no host to connect to.",
        "downstream_cx_rx_bytes_total": "Bytes received from clients.",
        "downstream_cx_tx_bytes_total": "Bytes sent to clients.",
        "upstream_connect_attempts_exceeded": "Connections closed after max_connect_attempts "
        "failed connects.",
        "idle_timeout": "Tunnels closed by the idle_timeout.",
    },
)


class TcpProxyFilter:
    def __init__(
        self, config: TcpProxy, stat_prefix: str, clusters: ClusterManager, store: StatsStore
    ) -> None:
        self.config = config
        self._clusters = clusters
        scope = store.scope(f"tcp.{stat_prefix}", "tcp", {"envoy_tcp_prefix": stat_prefix})
        self.stats = create_stats(TcpProxyStats, scope)

    async def on_new_connection(
        self, stream: ByteStream, info: ConnectionInfo, next_filter: NextFilter
    ) -> None:
        self.stats.downstream_cx_total.inc()
        try:
            cluster = self._clusters.get(self.config.cluster)
        except ClusterNotFound:  # a reload removed it; this connection was already here
            self.stats.downstream_cx_no_route.inc()
            return
        connected = await self._connect(cluster, _proxy_header(cluster.config, info))
        if connected is None:
            return
        upstream, host = connected
        result = TunnelResult()
        try:
            await run_tunnel(
                SocketEndpoint(stream, b""),
                SocketEndpoint(upstream, b""),
                result,
                idle_timeout=self.config.idle_timeout,
                max_duration=0,
                describe={
                    "peer": info.peer,
                    "cluster": cluster.name,
                    "upstream": host,
                    "filter_chain": info.filter_chain,
                },
            )
        except (DownstreamDisconnect, UpstreamReset) as exc:
            log.debug("tcp_proxy %s -> %s ended: %s", info.peer, host, exc)
        finally:
            upstream.close_now()
            cluster.stats.upstream_cx_active.dec()
            self.stats.downstream_cx_rx_bytes_total.inc(result.sent_up)
            self.stats.downstream_cx_tx_bytes_total.inc(result.sent_down)
            if result.cut == "SI":
                self.stats.idle_timeout.inc()

    async def _connect(
        self, cluster: Cluster, proxy_header: bytes
    ) -> tuple[ByteStream, str] | None:
        """A connection to a host of the cluster, or None (counted) after the attempts."""
        for _ in range(self.config.max_connect_attempts):
            host = cluster.choose_host()
            if host is None:
                self.stats.downstream_cx_no_route.inc()
                return None
            try:
                upstream = await cluster.open_connection(host, proxy_header=proxy_header)
            except UpstreamConnectError as exc:
                log.debug("tcp_proxy: %s", exc)
                continue
            return upstream, str(host)
        self.stats.upstream_connect_attempts_exceeded.inc()
        return None


def _proxy_header(cluster: ClusterConfig, info: ConnectionInfo) -> bytes:
    """The PROXY protocol header a cluster asks for, with the client's addresses."""
    if cluster.proxy_protocol is None or info.destination_ip is None:
        return b""
    source = (str(info.source_ip), info.source_port)
    destination = (str(info.destination_ip), info.destination_port)
    encode = (
        proxy_protocol.encode_v1 if cluster.proxy_protocol == "v1" else proxy_protocol.encode_v2
    )
    return encode(source, destination)
