"""Hypothesis strategies for HTTP/1.1 byte streams: valid, near-valid and hostile.

A message is assembled from parts (method, target, line endings, header names, colons,
values, framing, chunk sizes and extensions, trailers, ...), each drawn from its valid
forms. A message also picks a few parts (or none) to draw hostile: their forms then
include what request smuggling is made of: bare CR or LF line endings, whitespace around
colons and values, obs-fold, duplicate and list-valued Content-Length, Transfer-Encoding
variants, chunk sizes and extensions written oddly. Few hostile parts at a time keep each
oddity from hiding behind another that a parser refuses first.

A stream is one to three messages back to back (pipelining), sometimes with a byte
flipped, inserted or removed (near-valid), and `splits` cuts it into the reads a socket
might return.
"""

import itertools

from hypothesis import strategies as st

_CRLF = b"\r\n"
_TCHAR = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: Bytes that change how a line is read, for values and targets.
_HOSTILE = [b"\x00", b"\r", b"\n", b"\t", b" ", b"\x7f", b"\xff", b"\x80", b",", b";", b":"]


#: The parts of a message that can be drawn hostile; a message picks a few (or none).
PARTS = (
    "method", "space", "target", "version", "eol", "name", "colon", "value", "fold",
    "framing", "content-length", "transfer-encoding", "chunk-size", "chunk-ext", "trailer",
    "host", "status", "reason",
)  # fmt: skip
Hostile = frozenset[str]
_hostile_parts = st.frozensets(st.sampled_from(PARTS), max_size=2)


def _pick(valid: list[bytes], hostile: list[bytes], evil: bool) -> st.SearchStrategy[bytes]:
    """A valid form, or for a hostile part a hostile one a third of the time (a part may
    occur many times in a message: each occurrence varies)."""
    valid_forms = st.sampled_from(valid)
    if not evil:
        return valid_forms
    return st.one_of(valid_forms, valid_forms, st.sampled_from(hostile))


tokens = st.binary(min_size=1, max_size=6).map(lambda b: bytes(_TCHAR[x % len(_TCHAR)] for x in b))


def _text(evil: bool) -> st.SearchStrategy[bytes]:
    """A field value: visible characters, spaces inside, obs-text (and controls, evil)."""
    pieces = [b"a", b"b", b"1", b"/", b"=", b"-", b'"', b",", b";", b" ", b"\xe9"]
    return st.lists(_pick(pieces, _HOSTILE, evil) | tokens, max_size=5).map(b"".join)


def eols(evil: bool) -> st.SearchStrategy[bytes]:
    return _pick([_CRLF], [b"\n", b"\r", b"\r\r\n", b"\n\r", b""], evil)


def _methods(evil: bool) -> st.SearchStrategy[bytes]:
    valid = [b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT"]
    return _pick(valid, [b"get", b"G\x00T", b"", b"FOO", b"GET /"], evil)


_PATH = b"abcxyzXYZ019-._~!$&'()*+,;=:@/%?"
_paths = st.binary(max_size=8).map(lambda b: b"/" + bytes(_PATH[x % len(_PATH)] for x in b))


def _targets(evil: bool) -> st.SearchStrategy[bytes]:
    valid = [b"/", b"/a?b=c", b"*", b"http://x/y", b"/%00", b"/#f"]
    odd = [b"", b"x:443", b"/ a", b"/\x00", b"/\x7f", b"/\t", b"/\r", b"/\xff", b"/\xe9"]
    return _pick(valid, odd, evil) | _paths


def _versions(evil: bool) -> st.SearchStrategy[bytes]:
    hostile = [b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.10", b"HTTP/01.1"]
    return _pick([b"HTTP/1.1"] * 4 + [b"HTTP/1.0"], [*hostile, b""], evil)


def _spaces(evil: bool) -> st.SearchStrategy[bytes]:
    return _pick([b" "], [b"  ", b"\t", b"", b"\x0b", b" \t"], evil)


def _colons(evil: bool) -> st.SearchStrategy[bytes]:
    return _pick([b": ", b":", b":\t", b":  "], [b" : ", b" :", b":\x0b", b"\t:"], evil)


_CONTENT_LENGTHS = [b"05", b"+5", b"-1", b"5, 5", b"5,6", b" 5", b"5 ", b"0x5", b"1e3", b""]
_CONTENT_LENGTHS += [b"18446744073709551615", b"18446744073709551616", b"9" * 30]
_ODD_TRANSFER_ENCODINGS = [b"Chunked", b"CHUNKED", b"chunked ", b" chunked", b"chunked\t"]
_ODD_TRANSFER_ENCODINGS += [b"gzip, chunked", b"chunked, gzip", b"chunked, chunked"]
_ODD_TRANSFER_ENCODINGS += [b"identity", b"chunked;q=1", b"", b"x"]


def _names(evil: bool) -> st.SearchStrategy[bytes]:
    valid = [b"X-A", b"x-b", b"Accept", b"Trailer", b"TE", b"Keep-Alive", b"Expect"]
    valid += [b"Connection", b"Upgrade"]
    # Host and the framing headers come once each from request() and _framed(); a hostile
    # name may repeat them.
    hostile = [b"Host", b"Content-Length", b"Transfer-Encoding", b"Host ", b" Host"]
    hostile += [b"Content_Length", b"Content-Length\x00", b"X\x7fA", b""]
    return _pick(valid, hostile, evil) | tokens


def _values(name: bytes, hostile: Hostile) -> st.SearchStrategy[bytes]:
    by_name = {
        b"connection": [b"close", b"keep-alive", b"upgrade", b"Upgrade, close", b"x-a"],
        b"upgrade": [b"websocket", b"h2c"],
        b"expect": [b"100-continue", b"x"],
        b"host": [b"x", b"x:80", b"[::1]:8"],
        b"content-length": [b"0", b"3"],
        b"transfer-encoding": [b"chunked"],
    }
    odd = {
        b"host": [b"", b"a b", b"x ", b"\tx"],
        b"content-length": _CONTENT_LENGTHS,
        b"transfer-encoding": _ODD_TRANSFER_ENCODINGS,
    }
    key = name.lower()
    evil = "value" in hostile or key.decode("latin-1") in hostile
    if key in by_name:
        return _pick(by_name[key], odd.get(key, []) + _HOSTILE, evil)
    return _text(evil)


@st.composite
def header_line(draw: st.DrawFn, hostile: Hostile, names: list[bytes] | None = None) -> bytes:
    """One header line; with a hostile "fold", sometimes an obs-fold continuation."""
    name = draw(st.sampled_from(names) if names else _names("name" in hostile))
    line = name + draw(_colons("colon" in hostile)) + draw(_values(name, hostile))
    if "fold" in hostile and draw(st.booleans()):
        line += _CRLF + draw(st.sampled_from([b" ", b"\t"])) + draw(_text(False))
    return line + draw(eols("eol" in hostile))


def _chunk_extensions(evil: bool) -> st.SearchStrategy[bytes]:
    valid = [b"", b"", b";a", b";a=b", b';a="b c"']
    return _pick(valid, [b" ;a", b";", b"; a=b", b"\t;a", b";a=\x00", b";a\n"], evil)


@st.composite
def chunked_body(draw: st.DrawFn, hostile: Hostile) -> bytes:
    """Chunks (sizes perhaps wrong or oddly written), the last chunk and trailers."""
    out = b""
    odd_size = "chunk-size" in hostile
    eol = eols("eol" in hostile)
    for data in draw(st.lists(st.binary(min_size=1, max_size=12), max_size=3)):
        size = len(data) + (draw(st.sampled_from([0, 0, -1, 1])) if odd_size else 0)
        forms = [b"%x", b"%X", b"0%x"]
        text = draw(_pick(forms, [b"%x ", b" %x", b"0x%x", b"+%x", b"%x\t"], odd_size))
        out += text % max(size, 0) + draw(_chunk_extensions("chunk-ext" in hostile)) + draw(eol)
        out += data + draw(eol)
    out += draw(_pick([b"0", b"000"], [b"0 ", b"ffffffffffffffffff", b""], odd_size))
    out += draw(_chunk_extensions("chunk-ext" in hostile)) + draw(eol)
    names = [b"X-T", b"x-u"]
    names += [b"Content-Length", b"Host", b"Transfer-Encoding"] if "trailer" in hostile else []
    out += b"".join(draw(st.lists(header_line(hostile, names), max_size=2)))
    return out + draw(eol)


@st.composite
def _framed(draw: st.DrawFn, hostile: Hostile, headers: list[bytes]) -> bytes:
    """Adds framing headers to `headers` (in place) and returns the body they frame; with
    a hostile "framing", both framings or a length that is off by one."""
    evil = "framing" in hostile
    framing = draw(st.sampled_from(["none", "length", "chunked"] + (["both"] if evil else [])))
    body = b""
    eol = eols("eol" in hostile)
    if framing in ("length", "both"):
        body = draw(st.binary(max_size=16))
        declared = len(body) + (draw(st.sampled_from([0, -1, 1])) if evil else 0)
        headers.append(b"Content-Length: %d" % max(declared, 0) + draw(eol))
    if framing in ("chunked", "both"):
        odd = "transfer-encoding" in hostile
        te = draw(_pick([b"chunked"], _ODD_TRANSFER_ENCODINGS, odd))
        headers.append(b"Transfer-Encoding: " + te + draw(eol))
        body = draw(chunked_body(hostile))
    return body


@st.composite
def request(draw: st.DrawFn) -> bytes:
    """One request: its line, headers (Host among them, mostly) and a framed body, with
    a few of its parts (or none) drawn hostile."""
    hostile = draw(_hostile_parts)
    sp = _spaces("space" in hostile)
    method = draw(_methods("method" in hostile))
    target = draw(_targets("target" in hostile))
    if method == b"CONNECT" and "target" not in hostile:
        target = b"x:443"  # the authority-form, CONNECT's only one (RFC 9112 3.2.3)
    line = method + draw(sp) + target + draw(sp) + draw(_versions("version" in hostile))
    line += draw(eols("eol" in hostile))
    headers = draw(st.lists(header_line(hostile), max_size=4))
    if "host" not in hostile or draw(st.booleans()):
        headers.append(b"Host: x" + _CRLF)
    body = draw(_framed(hostile, headers))
    return line + b"".join(draw(st.permutations(headers))) + draw(eols("eol" in hostile)) + body


_STATUSES = [b"200", b"204", b"304", b"100", b"103", b"101", b"404", b"500"]


@st.composite
def response(draw: st.DrawFn) -> bytes:
    """One response: status line, headers and a body framed by length, chunks or close,
    with a few of its parts (or none) drawn hostile."""
    hostile = draw(_hostile_parts)
    odd_version = "version" in hostile
    version = draw(
        _pick([b"HTTP/1.1", b"HTTP/1.0"], [b"HTTP/2.0", b"HTTP/1.2", b"ICY"], odd_version)
    )
    odd_status = "status" in hostile
    status = draw(_pick(_STATUSES, [b"999", b"2000", b"20", b"099", b"+200", b""], odd_status))
    reasons = [b"OK", b"", b"Not Found", b"a\tb", b"\xe9"]
    reason = draw(_pick(reasons, [b"x\x00", b"x\r", b"x\x7f"], "reason" in hostile))
    sp = _spaces("space" in hostile)
    line = version + draw(sp) + status + draw(sp) + reason
    headers = draw(st.lists(header_line(hostile), max_size=4))
    body = draw(_framed(hostile, headers))
    if b"Content-Length" not in b"".join(headers) and draw(st.booleans()):
        body += draw(st.binary(max_size=8))  # an unframed body runs until the close
    head = line + draw(eols("eol" in hostile)) + b"".join(draw(st.permutations(headers)))
    return head + draw(eols("eol" in hostile)) + body


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with one or two bytes flipped, inserted or removed (near-valid inputs)."""
    for _ in range(draw(st.integers(1, 2))):
        at = draw(st.integers(0, len(data)))
        byte = draw(st.sampled_from([*_HOSTILE, b"0", b"a"]))
        kind = draw(st.sampled_from(["insert", "replace", "delete"]))
        if kind == "insert":
            data = data[:at] + byte + data[at:]
        elif kind == "replace":
            data = data[:at] + byte + data[at + 1 :]
        else:
            data = data[:at] + data[at + 1 :]
    return data


@st.composite
def request_streams(draw: st.DrawFn) -> bytes:
    """One to three pipelined requests, a quarter of the time mutated."""
    stream = b"".join(draw(st.lists(request(), min_size=1, max_size=3)))
    if draw(st.integers(0, 3)) == 0:
        stream = draw(mutated(stream))
    return stream


@st.composite
def response_streams(draw: st.DrawFn) -> bytes:
    """A response, sometimes after interim (1xx) ones, a quarter of the time mutated."""
    interim = draw(st.lists(st.sampled_from([b"100", b"103"]), max_size=2))
    stream = b"".join(b"HTTP/1.1 %s X\r\nX-I: 1\r\n\r\n" % status for status in interim)
    stream += draw(response())
    if draw(st.integers(0, 3)) == 0:
        stream = draw(mutated(stream))
    return stream


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """`data` cut at random byte boundaries into the reads a socket might return."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]
