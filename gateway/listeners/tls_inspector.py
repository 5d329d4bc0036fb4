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
import socket
import struct

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


class Peek(enum.Enum):
    NEED_DATA = "need data"
    NOT_TLS = "not tls"


@attrs.frozen
class ClientHello:
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
                except (IndexError, struct.error, UnicodeDecodeError):
                    return Peek.NOT_TLS


def _more_needed(size: int) -> Peek:
    """NEED_DATA while `size` bytes can still be peeked, else NOT_TLS: a ClientHello in
    more records than fit in PEEK_SIZE would be waited for until the listener's timeout
    (as one that is too large is refused at once)."""
    return Peek.NEED_DATA if size <= PEEK_SIZE else Peek.NOT_TLS


def _parse_body(body: bytes) -> ClientHello:
    pos = 2 + 32  # legacy_version, random
    pos += 1 + body[pos]  # session id
    pos += 2 + struct.unpack_from("!H", body, pos)[0]  # cipher suites
    pos += 1 + body[pos]  # compression methods
    server_name = None
    alpn: list[str] = []
    if pos == len(body):
        return ClientHello(None, ())  # no extensions at all
    (extensions_end,) = struct.unpack_from("!H", body, pos)
    pos += 2
    extensions_end += pos
    while pos + 4 <= extensions_end:
        ext_type, ext_len = struct.unpack_from("!HH", body, pos)
        ext = body[pos + 4 : pos + 4 + ext_len]
        pos += 4 + ext_len
        if ext_type == _SERVER_NAME:
            i = 2
            while i + 3 <= len(ext):
                name_type, name_len = ext[i], struct.unpack_from("!H", ext, i + 1)[0]
                if name_type == 0:  # host_name
                    server_name = ext[i + 3 : i + 3 + name_len].decode("ascii").lower()
                i += 3 + name_len
        elif ext_type == _ALPN:
            i = 2
            while i < len(ext):
                alpn.append(ext[i + 1 : i + 1 + ext[i]].decode("ascii"))
                i += 1 + ext[i]
    return ClientHello(server_name, tuple(alpn))


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
