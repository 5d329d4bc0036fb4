"""The TLS inspector's ClientHello parser on real ClientHellos, re-cut into records and
mutated, and on any bytes, with OpenSSL as the oracle for the server name.

Real ClientHellos come from Python's ssl module (OpenSSL) with a generated server name
and ALPN list. The parser must give back exactly those, however the handshake message is
cut into records; on anything else it must answer ClientHello, NEED_DATA or NOT_TLS and
never raise. Whenever OpenSSL, reading a (mutated) ClientHello as a server, gets as far
as its server-name callback, the parser must have read the same name: a filter chain is
chosen by the name the TLS stack will act on, unless that name is no host name (a line
break, a space, non-ASCII): the parser then reads none. NEED_DATA must only be said while
the ClientHello can still fit in what the listener peeks (bounded reads).
"""

import re
import ssl
import sys

from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.listeners.tls_inspector import (
    PEEK_SIZE,
    ClientHello,
    Peek,
    parse_client_hello,
)

_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)
_tlds = st.from_regex(r"[a-z]{2,6}", fullmatch=True)  # never all digits: not an IP address
server_names = st.builds(lambda ls, tld: ".".join([*ls, tld]), st.lists(_labels, max_size=3), _tlds)
_protocols = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12)
alpn_lists = st.lists(_protocols, max_size=4)


def client_hello(server_name: str | None, alpn: list[str], tls13: bool) -> bytes:
    """The first flight of a real TLS client (OpenSSL, through Python's ssl module)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if not tls13:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        context.set_alpn_protocols(alpn)
    outgoing = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def records(message: bytes, sizes: list[int]) -> bytes:
    """A handshake message cut into records of these sizes (the rest in a last one)."""
    out = b""
    while message:
        size = sizes.pop(0) if sizes else len(message)
        piece, message = message[: max(size, 1)], message[max(size, 1) :]
        out += b"\x16\x03\x01" + len(piece).to_bytes(2, "big") + piece
    return out


def openssl_server_name(data: bytes) -> tuple[bool, str | None]:
    """Whether OpenSSL, as a server, read `data` as far as its server-name callback, and
    the name it was given there."""
    seen: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sni_callback = lambda _tls, name, _context: seen.append(name)  # type: ignore[func-returns-value]
    incoming = ssl.MemoryBIO()
    incoming.write(data)
    tls = context.wrap_bio(incoming, ssl.MemoryBIO(), server_side=True)
    # Python's ssl cannot decode a non-ASCII name for the callback: it reports that as an
    # unraisable exception, and the callback is not reached. The oracle's limit, not news.
    hook, sys.unraisablehook = sys.unraisablehook, lambda _: None
    try:
        tls.do_handshake()
    except (ssl.SSLError, UnicodeError):
        pass  # no certificate: it fails after the callback, or before it on bad bytes
    finally:
        sys.unraisablehook = hook
    return bool(seen), seen[0] if seen else None


def as_the_inspector_reads(name: str | None) -> str | None:
    """A name OpenSSL read, as the parser gives it: lower-cased if it is a host name
    (letters, digits, `-`, `.`, `_`), else no name at all."""
    name = (name or "").lower()
    return name if re.fullmatch(r"[a-z0-9._-]+", name) else None


@st.composite
def hellos(draw: st.DrawFn) -> tuple[bytes, str | None, tuple[str, ...]]:
    name = draw(st.none() | server_names)
    alpn = draw(alpn_lists)
    return client_hello(name, alpn, draw(st.booleans())), name, tuple(alpn)


@st.composite
def mutated_hellos(draw: st.DrawFn) -> bytes:
    """A real ClientHello with a few bytes flipped, inserted or removed, in one record or
    re-cut into several."""
    data = draw(hellos())[0]
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data) - 1))
        byte = draw(st.integers(0, 255) | st.sampled_from([0, 1, 0xFF, data[at] ^ 1]))
        kind = draw(st.sampled_from(["replace", "replace", "insert", "delete"]))
        if kind == "replace":
            data = data[:at] + bytes([byte]) + data[at + 1 :]
        elif kind == "insert":
            data = data[:at] + bytes([byte]) + data[at:]
        else:
            data = data[:at] + data[at + 1 :]
    if draw(st.booleans()):
        data = records(data[5:], draw(st.lists(st.integers(1, 300), max_size=4)))
    return data


def _extensions(hello: bytes) -> tuple[bytes, list[bytes]]:
    """A real ClientHello's body up to its extensions, and the extensions, each whole."""
    body = hello[9:]
    pos = 34 + 1 + body[34]
    pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    pos += 1 + body[pos]
    head, block = body[:pos], body[pos + 2 :]
    extensions = []
    while block:
        size = 4 + int.from_bytes(block[2:4], "big")
        extensions.append(block[:size])
        block = block[size:]
    return head, extensions


def _vector(data: bytes, size: int, off: int = 0) -> bytes:
    """`data` with its length in front, that length perhaps off by `off`."""
    return max(len(data) + off, 0).to_bytes(size, "big") + data


_off = st.sampled_from([0] * 8 + [-1, 1])
_odd_names = st.sampled_from(
    [b"", b"a\x00.example", b"\xff.example", b"x" * 256, b"A.Example", b"a\nb.example", b"a b"]
)


@st.composite
def _server_name_extension(draw: st.DrawFn) -> bytes:
    entries = b""
    for _ in range(draw(st.integers(1, 2) | st.just(1))):
        name = draw(server_names.map(str.encode) | _odd_names)
        entries += bytes([draw(st.sampled_from([0, 0, 0, 1]))]) + _vector(name, 2, draw(_off))
    return b"\x00\x00" + _vector(_vector(entries, 2, draw(_off)), 2, draw(_off))


@st.composite
def _alpn_extension(draw: st.DrawFn) -> bytes:
    names = draw(st.lists(_protocols.map(str.encode) | st.sampled_from([b"", b"\xff"]), max_size=3))
    protocols = b"".join(_vector(n, 1, draw(_off)) for n in names)
    return b"\x00\x10" + _vector(_vector(protocols, 2, draw(_off)), 2, draw(_off))


@st.composite
def crafted_hellos(draw: st.DrawFn) -> bytes:
    """A real ClientHello whose server_name and ALPN extensions are generated: entries of
    odd types and contents, lengths off by one, an extension twice."""
    head, extensions = _extensions(client_hello(None, [], draw(st.booleans())))
    for ext in draw(st.lists(_server_name_extension() | _alpn_extension(), max_size=3)):
        extensions.insert(draw(st.integers(0, len(extensions))), ext)
    body = head + _vector(b"".join(extensions), 2)
    message = b"\x01" + _vector(body, 3)
    return b"\x16\x03\x01" + _vector(message, 2)


inputs = st.one_of(
    st.binary(max_size=64),
    st.binary(max_size=64).map(lambda b: b"\x16\x03\x01" + b),
    mutated_hellos(),
)


@given(hellos(), st.lists(st.integers(1, 400), max_size=5))
def test_a_real_client_hello_gives_its_name_and_protocols_however_it_is_cut(
    hello: tuple[bytes, str | None, tuple[str, ...]], sizes: list[int]
) -> None:
    data, name, alpn = hello
    expected = ClientHello(name, alpn)
    assert parse_client_hello(data) == expected
    recut = records(data[5:], sizes)
    assert parse_client_hello(recut) == expected
    for cut in {0, 4, 5, len(recut) // 2, len(recut) - 1}:
        assert parse_client_hello(recut[:cut]) is Peek.NEED_DATA


@given(inputs)
def test_any_bytes_give_a_client_hello_need_data_or_not_tls(data: bytes) -> None:
    result = parse_client_hello(data)
    assert isinstance(result, ClientHello | Peek)
    if result is Peek.NEED_DATA:
        # The listener peeks at most PEEK_SIZE bytes: waiting past that waits for nothing.
        filled = data + b"\x16\x03\x03\x00\x01\x00" * (PEEK_SIZE // 6)
        assert parse_client_hello(filled[:PEEK_SIZE]) is not Peek.NEED_DATA


@given(mutated_hellos())
def test_the_server_name_is_the_one_openssl_reads(data: bytes) -> None:
    reached, name = openssl_server_name(data)
    if reached and (name is None or name.isascii()):
        result = parse_client_hello(data)
        assert isinstance(result, ClientHello), result
        assert result.server_name == as_the_inspector_reads(name)


@given(crafted_hellos())
def test_a_server_name_or_alpn_list_openssl_refuses_is_not_tls(data: bytes) -> None:
    """Both ways: the parser takes the ClientHello exactly when OpenSSL does (the rest of
    it is real), with the same name. A name OpenSSL passes on but Python's callback cannot
    decode (the non-ASCII one of `_odd_names`) never reaches the callback: there only the
    parser is asked."""
    reached, name = openssl_server_name(data)
    result = parse_client_hello(data)
    if not reached and isinstance(result, ClientHello):
        assume(b"\xff.example" not in data)
    assert isinstance(result, ClientHello) == reached, (result, name)
    if isinstance(result, ClientHello) and name is not None:
        assert result.server_name == as_the_inspector_reads(name)
