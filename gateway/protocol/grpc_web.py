"""gRPC-Web's wire format as a proxy bridges it to gRPC (grpc/doc/PROTOCOL-WEB.md), sans-IO.

A gRPC-Web call is a gRPC call that a browser can make: the same length-prefixed messages
in the body, but the trailers, which browsers cannot read, travel as one more
length-prefixed frame at the end of the body, flagged 0x80, holding `name:value\\r\\n` lines.
In the `-text` variants both bodies are base64, so that a client limited to text
(XMLHttpRequest's responseText) can read a response as it streams.

Everything here works chunk by chunk with a bounded carry: a base64 quad or triple split
across chunks (at most 3 bytes), or the prefix of a message split across chunks (at most
5 bytes). No body is ever held whole.

Theory of the response encoder: base64 turns 3 bytes into 4 characters, so a chunk whose
length is not a multiple of 3 leaves 1 or 2 bytes that cannot be encoded without padding.
Padding ends a base64 string, so they are carried into the next chunk: the client sees one
unbroken base64 stream. But a message held back by 2 bytes is a message the client cannot
deliver, and a server stream may send its next one minutes later. So the encoder also
tracks where the gRPC messages end (`MessageCursor`) and, when a chunk ends exactly at the
end of a message, encodes all of it, padding included: the client has every whole message
at once, and decodes padded groups of 4 in the middle of the stream as Envoy sends them
(each frame padded on its own).
"""

import binascii
import struct

from gateway.protocol.headers import HeaderMap

#: The flag byte of the trailer frame (the gRPC message flags' most significant bit).
TRAILER_FLAG = 0x80
_PREFIX = struct.Struct(">BI")

_WEB = "application/grpc-web"
_TEXT = "application/grpc-web-text"


def parse_content_type(value: str | None) -> tuple[bool, str] | None:
    """For a gRPC-Web media type, whether it is a `-text` one and its `+suffix` ("+proto",
    or "" for none); None for anything else. Parameters after ";" are ignored, and media
    types compare case-insensitively (RFC 9110 8.3.1)."""
    if value is None:
        return None
    media = value.partition(";")[0].strip().lower()
    if not media.startswith(_WEB):
        return None
    text = media.startswith(_TEXT)
    rest = media[len(_TEXT) if text else len(_WEB) :]
    if rest and (not rest.startswith("+") or len(rest) == 1):
        return None  # application/grpc-webfoo, or a bare "+"
    return text, rest


def accepts_text(accept: str | None) -> bool:
    """Whether an Accept header asks for a `-text` response (grpc-web's text mode sends
    `accept: application/grpc-web-text`)."""
    if not accept:
        return False
    for media in accept.split(","):
        parsed = parse_content_type(media)
        if parsed is not None and parsed[0]:
            return True
    return False


def content_type(text: bool, suffix: str) -> str:
    return (_TEXT if text else _WEB) + suffix


def trailer_frame(trailers: HeaderMap) -> bytes:
    """The trailers as gRPC-Web's last frame: lower-case `name:value` lines, each ended by
    CRLF, behind a 0x80 flag and the length. Values are latin-1, as the codecs read them."""
    block = "".join(f"{name.lower()}:{value}\r\n" for name, value in trailers).encode("latin-1")
    return _PREFIX.pack(TRAILER_FLAG, len(block)) + block


class Base64Decoder:
    """Decodes a `-text` request body as it streams: whole groups of 4 characters at a time,
    carrying the rest (at most 3) into the next chunk. Padding may stand at the end of any
    group, because clients encode each message on its own and send them back to back.
    ValueError for anything that is not base64."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def decode(self, data: bytes) -> bytes:
        if self._rest:
            data = self._rest + data
        cut = len(data) - len(data) % 4
        self._rest = data[cut:]
        if not cut:
            return b""
        return _decode_groups(data[:cut] if cut < len(data) else data)

    def finish(self) -> None:
        """The body ended: a partial group is an error (padding is mandatory)."""
        if self._rest:
            raise ValueError("base64 body length is not a multiple of 4")


def _decode_groups(data: bytes) -> bytes:
    """`data` (a multiple of 4 long) decoded, padded groups allowed anywhere; strict, so
    no whitespace or stray character passes."""
    pad = data.find(b"=")
    if pad < 0 or pad >= len(data) - 2:  # none, or only in the last group: one call
        return binascii.a2b_base64(data, strict_mode=True)
    out = []
    start = 0
    while pad >= 0:
        end = (pad // 4 + 1) * 4  # the end of the group that holds this padding
        out.append(binascii.a2b_base64(data[start:end], strict_mode=True))
        start = end
        pad = data.find(b"=", start)
    if start < len(data):
        out.append(binascii.a2b_base64(data[start:], strict_mode=True))
    return b"".join(out)


class MessageCursor:
    """Follows the gRPC messages in a body, prefix by prefix, to tell whether a chunk ends
    where a message ends. Keeps at most a 5-byte prefix split across chunks and a count."""

    __slots__ = ("_prefix", "_remaining")

    def __init__(self) -> None:
        self._prefix = b""
        self._remaining = 0

    def advance(self, data: bytes) -> bool:
        """Moves over `data`; whether it ends on a message boundary."""
        pos, size = 0, len(data)
        while pos < size:
            if self._remaining:
                step = min(self._remaining, size - pos)
                self._remaining -= step
                pos += step
                continue
            piece = data[pos : pos + _PREFIX.size - len(self._prefix)]
            pos += len(piece)
            self._prefix += piece
            if len(self._prefix) == _PREFIX.size:
                self._remaining = _PREFIX.unpack(self._prefix)[1]
                self._prefix = b""
        return not self._remaining and not self._prefix


class Base64Encoder:
    """Encodes a `-text` response body chunk by chunk: multiples of 3 bytes, the rest (at
    most 2) carried into the next chunk, unless the chunk ends a message (`flush`), when
    all of it goes out padded."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def encode(self, data: bytes, flush: bool) -> bytes:
        if self._rest:
            data = self._rest + data
        if flush:
            self._rest = b""
            return binascii.b2a_base64(data, newline=False)
        cut = len(data) - len(data) % 3
        self._rest = data[cut:]
        return binascii.b2a_base64(data[:cut] if cut < len(data) else data, newline=False)
