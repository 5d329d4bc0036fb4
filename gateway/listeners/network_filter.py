"""Network filters: what a filter chain runs on a connection, and what they know about it.

Envoy's network filters read and write bytes of a connection; here one coroutine does
both. A filter gets the connection's stream (cleartext, or TLS once terminated), its
`ConnectionInfo`, and the rest of the chain as `next_filter`. It may refuse the connection
(return without calling `next_filter`: the listener closes it), hold something for the
connection's lifetime around `await next_filter(stream, info)` (a connection slot), or
pass on a stream of its own that reads and writes the bytes through it. The last filter of
a chain is terminal (the HTTP connection manager or tcp_proxy): it owns the bytes until
the connection ends and never calls `next_filter`.
"""

import functools
import ipaddress
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs

from gateway.io.byte_stream import ByteStream


@attrs.frozen
class TlsInfo:
    """The TLS session of a connection the gateway terminated."""

    version: str
    cipher: str
    #: The negotiated ALPN protocol ("h2", "http/1.1"), if any.
    alpn: str | None
    #: The client certificate's subject ("CN=client,O=Example"), if it presented one.
    peer_subject: str | None


@attrs.define
class ConnectionInfo:
    """What is known about a downstream connection (Envoy's ConnectionInfoProvider plus
    the TLS inspector's findings)."""

    peer: str
    source_ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    destination_port: int
    source_port: int = 0
    #: The address the client connected to (None if unknown).
    destination_ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    #: "tls" when the connection opened with a ClientHello; "raw_buffer" otherwise, or
    #: None when nobody looked (no chain needed to).
    transport_protocol: str | None = None
    #: SNI and ALPN offered in the ClientHello.
    server_name: str | None = None
    application_protocols: tuple[str, ...] = ()
    filter_chain: str = "-"
    #: Set once the filter chain has terminated TLS.
    tls: TlsInfo | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def destination(self) -> str:
        """The address the client connected to, as `peer` writes addresses ("-" if
        unknown)."""
        ip = self.destination_ip
        if ip is None:
            return "-"
        return (
            f"[{ip}]:{self.destination_port}"
            if ip.version == 6
            else f"{ip}:{self.destination_port}"
        )


NextFilter = Callable[[ByteStream, ConnectionInfo], Awaitable[None]]


class NetworkFilter(Protocol):
    async def on_new_connection(
        self, stream: ByteStream, info: ConnectionInfo, next_filter: NextFilter
    ) -> None:
        """Handles the connection; returns when done with it (the listener closes it)."""
        ...


async def run_filters(
    filters: list[NetworkFilter], stream: ByteStream, info: ConnectionInfo
) -> None:
    """Runs a chain's filters on a connection, each handing over to the next."""
    await _run_from(filters, 0, stream, info)


async def _run_from(
    filters: list[NetworkFilter], index: int, stream: ByteStream, info: ConnectionInfo
) -> None:
    # A module function bound with partial, not a closure that calls itself: that closure
    # is a reference cycle, one per connection, left for the cyclic GC.
    if index < len(filters):
        await filters[index].on_new_connection(
            stream, info, functools.partial(_run_from, filters, index + 1)
        )
