"""The PROXY protocol (HAProxy's, versions 1 and 2): the client's real address, sent by an
L4 balancer in front of the gateway, and by the gateway to upstreams that want it.

Behind a TCP load balancer every connection seems to come from the balancer. With
`proxy_protocol = true` on a listener, each connection must open with a PROXY header;
the listener reads exactly the header (peek, then read its length, so the bytes after it
stay for the TLS inspector or the codec) and from then on the header's source address is
the connection's peer: in the access log, x-forwarded-for, RBAC and hash policies. A
cluster with `proxy_protocol = "v1" | "v2"` (used by tcp_proxy) sends one on each
upstream connection. `parse` and `encode_v1/v2` are sans-IO.
"""

import enum
import ipaddress
import re
import socket
import struct

import attrs
import trio

#: The v2 header's fixed start (spec section 2.2).
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: The longest v1 line, CRLF included (spec section 2.1).
_V1_MAX = 107
#: A v1 TCP line (spec section 2.1): single spaces, addresses in their family's textual
#: form and decimal ports. Python's own parsers take more (an IPv6 zone, `%` then any byte
#: but a space, which str() gives back into logs, x-forwarded-for and the PROXY header
#: sent upstream; `+1`, `1_0`, or a tab before a port), so the line's shape is checked
#: first.
_V1_TCP = re.compile(
    r"PROXY (TCP4|TCP6) ([0-9A-Fa-f:.]+) ([0-9A-Fa-f:.]+) ([0-9]{1,5}) ([0-9]{1,5})"
)
#: Enough to hold a v2 header with its TLVs in any real deployment.
_PEEK_SIZE = 16 + 65535
_V2_PROXY, _V2_LOCAL = 0x21, 0x20
_FAMILIES = {0x11: socket.AF_INET, 0x21: socket.AF_INET6}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Peek(enum.Enum):
    NEED_DATA = "need data"


class ProxyProtocolError(Exception):
    """The connection did not open with a valid PROXY header."""


@attrs.frozen
class ProxyHeader:
    """What a header says; `source` is None for v1 UNKNOWN and v2 LOCAL (health checks of
    the balancer itself): the connection's own addresses then stand."""

    length: int
    source: tuple[IPAddress, int] | None = None
    destination: tuple[IPAddress, int] | None = None


def parse(data: bytes) -> ProxyHeader | Peek:
    """The header at the start of `data`; NEED_DATA if incomplete; ProxyProtocolError if
    it is not one."""
    if data.startswith(V2_SIGNATURE[: len(data)]) and len(data) < 16:
        return Peek.NEED_DATA
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(b"PROXY "[: len(data)]) and len(data) < 6:
        return Peek.NEED_DATA
    if data.startswith(b"PROXY "):
        return _parse_v1(data)
    raise ProxyProtocolError("no PROXY protocol header")


def _parse_v1(data: bytes) -> ProxyHeader | Peek:
    end = data.find(b"\r\n", 0, _V1_MAX)
    if end < 0:
        if len(data) >= _V1_MAX:
            raise ProxyProtocolError("PROXY v1 line too long")
        return Peek.NEED_DATA
    line = data[:end].decode("ascii", "replace")
    if line.split(" ")[1:2] == ["UNKNOWN"]:
        return ProxyHeader(end + 2)
    m = _V1_TCP.fullmatch(line)
    if m is None:
        raise ProxyProtocolError(f"bad PROXY v1 line {data[:end]!r}")
    try:
        src, dst = ipaddress.ip_address(m[2]), ipaddress.ip_address(m[3])
    except ValueError as exc:
        raise ProxyProtocolError(f"bad PROXY v1 address: {exc}") from None
    sport, dport = int(m[4]), int(m[5])
    version = 4 if m[1] == "TCP4" else 6
    if src.version != version or dst.version != version or max(sport, dport) > 65535:
        raise ProxyProtocolError(f"bad PROXY v1 line {data[:end]!r}")
    return ProxyHeader(end + 2, (src, sport), (dst, dport))


def _parse_v2(data: bytes) -> ProxyHeader | Peek:
    ver_cmd, family, length = data[12], data[13], struct.unpack_from("!H", data, 14)[0]
    if len(data) < 16 + length:
        return Peek.NEED_DATA
    total = 16 + length
    if ver_cmd == _V2_LOCAL:
        return ProxyHeader(total)
    if ver_cmd != _V2_PROXY:
        raise ProxyProtocolError(f"bad PROXY v2 version/command {ver_cmd:#x}")
    if family not in _FAMILIES:
        return ProxyHeader(total)  # UNSPEC or a unix socket: nothing to use
    size = 4 if _FAMILIES[family] == socket.AF_INET else 16
    if length < 2 * size + 4:
        raise ProxyProtocolError("PROXY v2 address block too short")
    body = data[16:total]
    src = ipaddress.ip_address(body[:size])
    dst = ipaddress.ip_address(body[size : 2 * size])
    sport, dport = struct.unpack_from("!HH", body, 2 * size)
    return ProxyHeader(total, (src, sport), (dst, dport))


def encode_v1(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {proto} {src} {dst} {source[1]} {destination[1]}\r\n".encode()


def encode_v2(source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        return V2_SIGNATURE + struct.pack("!BBH", _V2_LOCAL, 0, 0)
    family = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, family, len(body)) + body


async def read_header(sock: trio.socket.SocketType) -> ProxyHeader:
    """Consumes the PROXY header and nothing after it. Raises ProxyProtocolError if the
    connection does not start with one (or closes first); the caller bounds the wait.

    As with the TLS inspector, a peek leaves the bytes readable, so a header split across
    segments is peeked again after a short, growing sleep."""
    delay = 0.001
    while True:
        data = await sock.recv(_PEEK_SIZE, socket.MSG_PEEK)
        if not data:
            raise ProxyProtocolError("closed before a PROXY header")
        header = parse(data)
        if isinstance(header, ProxyHeader):
            await _read_exactly(sock, header.length)
            return header
        await trio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def _read_exactly(sock: trio.socket.SocketType, size: int) -> None:
    while size:
        data = await sock.recv(size)
        if not data:
            raise ProxyProtocolError("closed in the middle of a PROXY header")
        size -= len(data)
