"""Connecting to an upstream host: TCP, then TLS if the cluster asks for it.

Envoy calls what sits between a connection and its bytes a transport socket; a cluster's
is raw TCP or TLS (`[clusters.NAME.tls]`). The HTTP pools and tcp_proxy both connect
here, inside their own deadline (the cluster's connect_timeout covers the handshake
too). A failed handshake raises `ssl.SSLError`, an OSError, so callers count and report
it as the connect failure it is (502, flag UF).

The connection itself comes from the cluster's `UpstreamConnector`: `open_tcp` here, or,
in a test, one that hands out in-memory streams to an upstream the test runs; the PROXY
header and TLS go over whatever it opened.

Client contexts are built once per cluster config (loading a CA bundle takes
milliseconds) and kept for as long as that config lives: a reload brings new configs and
so new contexts.
"""

import ssl
import weakref
from typing import Protocol

import trio

from gateway.config.model import Address, Cluster, UpstreamTlsContext
from gateway.config.tls_context import client_context
from gateway.errors import ConfigError
from gateway.io.byte_stream import ByteStream, TcpStream
from gateway.io.tls_stream import TlsStream

_contexts: dict[tuple[int, tuple[str, ...]], ssl.SSLContext] = {}


class UpstreamConnector(Protocol):
    """Opens the transport to a host (`open_tcp`: TCP), which `connect_upstream` then
    layers the PROXY header and TLS on. A failure is an OSError."""

    async def __call__(self, address: Address) -> ByteStream: ...


def _default_alpn(cluster: Cluster) -> list[str]:
    return ["h2"] if cluster.protocol == "http2" else ["http/1.1"]


def upstream_context(tls: UpstreamTlsContext, alpn: list[str]) -> ssl.SSLContext:
    """The client context for a cluster's TLS config, built on first use. Files that
    went missing since the config was validated fail the connect like a bad handshake."""
    key = (id(tls), tuple(alpn))
    context = _contexts.get(key)
    if context is None:
        try:
            context = client_context(tls, alpn, "tls")
        except ConfigError as exc:
            raise ssl.SSLError(exc.errors[0]) from None
        _contexts[key] = context
        weakref.finalize(tls, _contexts.pop, key, None)
    return context


async def open_tcp(address: Address) -> ByteStream:
    """The gateway's `UpstreamConnector`: a TCP connection."""
    return TcpStream(await trio.open_tcp_stream(address.host, address.port))


async def connect_upstream(
    connector: UpstreamConnector,
    address: Address,
    cluster: Cluster,
    *,
    alpn: list[str] | None = None,
    proxy_header: bytes = b"",
) -> ByteStream:
    """A connected stream to `address` (opened by `connector`), TLS-wrapped and
    handshaken if the cluster has `tls`. `alpn` overrides the cluster's default
    (tcp_proxy offers none); a PROXY protocol header goes first, before any TLS, as the
    protocol wants."""
    transport = await connector(address)
    try:
        if proxy_header:
            await transport.send_all(proxy_header)
        tls = cluster.tls
        if tls is None:
            return transport
        offered = tls.alpn_protocols if tls.alpn_protocols is not None else alpn
        if offered is None:
            offered = _default_alpn(cluster)
        context = upstream_context(tls, offered)
        # An IP address as server_hostname is checked against the certificate's IP SANs
        # and not sent as SNI (ssl does that).
        server_hostname = tls.sni if tls.sni is not None else address.host
        stream = trio.SSLStream(
            transport, context, server_hostname=server_hostname, https_compatible=True
        )
        try:
            await stream.do_handshake()
        except trio.BrokenResourceError as exc:
            cause = exc.__cause__
            raise cause if isinstance(cause, OSError) else ssl.SSLError(str(exc)) from exc
        return TlsStream(stream)
    except BaseException:
        transport.close_now()
        raise
