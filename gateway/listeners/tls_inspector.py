"""The TLS inspector: what a TLS ClientHello asks for, read before anyone answers it.

Filter chains may match on the server name (SNI) and the ALPN protocols a client offers,
and TLS passthrough must forward the ClientHello untouched, so the listener *peeks*
(MSG_PEEK) instead of reading: the bytes stay in the kernel for whoever handles the
connection next, the TLS terminator, the HCM or a tcp_proxy. `parse_client_hello` is
sans-IO; `inspect` is the Trio side.

Theory of operation: a ClientHello is a handshake message carried in one or more TLS
records (type 22). The records' payloads are joined until the handshake message is
complete, then its extensions are walked for server_name (0) and ALPN (16). Anything that
does not look like a ClientHello is "not TLS" (transport protocol raw_buffer).
"""

import enum
import re
import socket

import attrs
import trio

#: A ClientHello larger than this is refused (real ones are well under 2 KiB; post-quantum
#: key shares make them about 1.8 KiB).
MAX_CLIENT_HELLO = 16384
#: What `inspect` peeks: the largest ClientHello with room for its record headers.
PEEK_SIZE = MAX_CLIENT_HELLO + 5 * 4
#: RFC 8446 5.1: a record's plaintext is at most 2^14 bytes.
_MAX_RECORD = 1 << 14
_HANDSHAKE_RECORD = 22
_CLIENT_HELLO = 1
_SERVER_NAME = 0
_ALPN = 16
#: RFC 6066 3: a HostName is a DNS host name in ASCII (IDNs as A-labels). Underscores are
#: taken too: OpenSSL and BoringSSL pass them on, and meshes name services with them
#: (Istio's `outbound_.8080_._.svc.cluster.local`).
_HOST_NAME = re.compile(rb"[a-z0-9._-]+")


class Peek(enum.Enum):
    NEED_DATA = "need data"
    NOT_TLS = "not tls"


@attrs.frozen
class ClientHello:
    #: The SNI, lower-cased; None without one, or when it is not a host name.
    server_name: str | None
    alpn_protocols: tuple[str, ...]


def parse_client_hello(data: bytes) -> ClientHello | Peek:
    """The ClientHello at the start of `data`, NEED_DATA if it is not all there, or
    NOT_TLS if the bytes are not a TLS handshake."""
    message = b""
    offset = 0
    while True:
        if len(data) < offset + 5:
            return _more_needed(offset + 5)
        kind, major, length = (
            data[offset],
            data[offset + 1],
            (data[offset + 3] << 8) | data[offset + 4],
        )
        if kind != _HANDSHAKE_RECORD or major != 3 or not 0 < length <= _MAX_RECORD:
            return Peek.NOT_TLS
        if len(data) < offset + 5 + length:
            return _more_needed(offset + 5 + length)
        message += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if len(message) >= 4:
            if message[0] != _CLIENT_HELLO:
                return Peek.NOT_TLS
            size = int.from_bytes(message[1:4], "big")
            if size > MAX_CLIENT_HELLO:
                return Peek.NOT_TLS
            if len(message) >= 4 + size:
                try:
                    return _parse_body(message[4 : 4 + size])
                except _Malformed:
                    return Peek.NOT_TLS


def _more_needed(size: int) -> Peek:
    """NEED_DATA while `size` bytes can still be peeked, else NOT_TLS: a ClientHello in
    more records than fit in PEEK_SIZE would be waited for until the listener's timeout
    (as one that is too large is refused at once)."""
    return Peek.NEED_DATA if size <= PEEK_SIZE else Peek.NOT_TLS


class _Malformed(Exception):
    """Lengths that do not add up, or what TLS stacks refuse: not a ClientHello."""


def _vector(data: bytes, pos: int, size: int) -> tuple[bytes, int]:
    """The vector at `pos` with a `size`-byte length, and the position after it."""
    start = pos + size
    end = start + int.from_bytes(data[pos:start], "big")
    if start > len(data) or end > len(data):
        raise _Malformed
    return data[start:end], end


def _parse_body(body: bytes) -> ClientHello:
    """A ClientHello's server name and ALPN protocols, read as TLS stacks read them:
    every length must add up, no extension may repeat (RFC 8446 4.2), and the server name
    list holds one host_name (RFC 6066 3; OpenSSL and BoringSSL refuse more). Read more
    loosely, a name the TLS stack never acts on could choose the filter chain."""
    pos = 2 + 32  # legacy_version, random
    _, pos = _vector(body, pos, 1)  # session id
    _, pos = _vector(body, pos, 2)  # cipher suites
    _, pos = _vector(body, pos, 1)  # compression methods
    if pos == len(body):
        return ClientHello(None, ())  # no extensions at all
    extensions, pos = _vector(body, pos, 2)
    if pos != len(body):
        raise _Malformed
    server_name = None
    alpn: tuple[str, ...] = ()
    seen: set[int] = set()
    pos = 0
    while pos < len(extensions):
        ext_type = int.from_bytes(extensions[pos : pos + 2], "big")
        ext, pos = _vector(extensions, pos + 2, 2)
        if ext_type in seen:
            raise _Malformed
        seen.add(ext_type)
        if ext_type == _SERVER_NAME:
            server_name = _server_name(ext)
        elif ext_type == _ALPN:
            alpn = _alpn_protocols(ext)
    return ClientHello(server_name, alpn)


def _server_name(ext: bytes) -> str | None:
    names, end = _vector(ext, 0, 2)
    if end != len(ext) or names[:1] != b"\x00":  # host_name
        raise _Malformed
    name, end = _vector(names, 1, 2)
    if end != len(names) or len(name) > 255 or b"\x00" in name:
        raise _Malformed
    # Other bytes (a line break to forge an access log line, a space, non-ASCII), which
    # OpenSSL passes on, do not make the ClientHello "not TLS": the name is read as absent,
    # as if the client had sent none. It then matches only chains that ask for no name,
    # picks the first certificate, and never reaches a log or a wildcard's suffix match.
    name = name.lower()
    return name.decode("ascii") if _HOST_NAME.fullmatch(name) else None


def _alpn_protocols(ext: bytes) -> tuple[str, ...]:
    """RFC 7301 3.1: a non-empty list of non-empty opaque protocol names."""
    protocols, end = _vector(ext, 0, 2)
    if end != len(ext) or not protocols:
        raise _Malformed
    found = []
    pos = 0
    while pos < len(protocols):
        name, pos = _vector(protocols, pos, 1)
        if not name:
            raise _Malformed
        found.append(name.decode("latin-1"))
    return tuple(found)


async def inspect(sock: trio.socket.SocketType) -> ClientHello | Peek:
    """Peeks at the connection's first bytes until the ClientHello is complete (or the
    bytes are not TLS). Returns NEED_DATA if the client closed first.

    A peek leaves the bytes in the kernel, so the socket stays readable and readiness
    cannot say "more arrived": a ClientHello split across segments is re-peeked after a
    short, growing sleep. The caller bounds the whole wait."""
    delay = 0.001
    while True:
        data = await sock.recv(PEEK_SIZE, socket.MSG_PEEK)
        if not data:
            return Peek.NEED_DATA
        result = parse_client_hello(data)
        if result is not Peek.NEED_DATA:
            return result
        await trio.sleep(delay)
        delay = min(delay * 2, 0.05)
