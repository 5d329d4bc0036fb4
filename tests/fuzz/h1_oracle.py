"""h11 as the oracle for the HTTP/1.1 codecs, and the differences the codecs own up to.

`request_difference` and `response_difference` compare the codec's transcript of a byte
stream with h11's. They return None when the two agree, or when they differ only in a way
listed here; otherwise they return a description of the difference: a finding.

Two kinds of difference are listed, each with the rule that makes it acceptable:
- STRICTER: the codec refuses (400, or an upstream reset) a message h11 reads. Each
  allowance is a predicate on the raw bytes of the one message refused, as h11 delimits
  it, so it cannot hide a difference in another message; a codec that starts accepting
  what it documents refusing still agrees with h11, which is what matters.
- LENIENT: the codec reads what h11 refuses, where RFC 9112 lets a recipient do so. Each
  is a rewrite of the refused bytes into the form h11 reads; the codec must then frame
  the message exactly as h11 frames the rewrite.
KNOWN FINDING entries are not intended: each names the strict-xfail test that reproduces
it (tests/fuzz/test_codec_h1_findings.py). When a fix makes that test pass, delete the
entry with the xfail.
"""

import re
from collections.abc import Callable

import attrs
import h11

from gateway.protocol.headers import NOT_TRAILERS
from tests.fuzz.h1_drivers import (
    CLOSED,
    CUT,
    ERROR,
    HEAD_LIMIT,
    STOPPED,
    Message,
    Transcript,
    h11_requests,
    h11_response,
)

_OWS = b" \t"
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
#: RFC 9112 7.1.1 without the bad whitespace (BWS) senders must not send.
_CHUNK_LINE = re.compile(rb"[0-9A-Fa-f]+(?:;%s(?:=(?:%s|%s))?)*" % (_TOKEN, _TOKEN, _QUOTED))


@attrs.frozen
class Delimited:
    """One message's bytes as h11 delimits them: where it starts in the stream, its head,
    and the rest (its body as h11 read it, or the stream's remainder if h11 found no
    end)."""

    start: int
    head: bytes
    rest: bytes

    @property
    def start_line(self) -> bytes:
        return _lines(self.head)[0]

    @property
    def chunk_lines(self) -> list[bytes]:
        return _chunked(self.rest)[0]

    @property
    def trailer_section(self) -> bytes:
        return _chunked(self.rest)[1]

    @property
    def field_lines(self) -> list[bytes]:
        """Header lines, then trailer lines (llhttp holds both to the same rules)."""
        return _lines(self.head)[1:] + _lines(self.trailer_section)


def _lines(head: bytes) -> list[bytes]:
    return [line for line in re.split(rb"\r?\n", head) if line]


def _chunked(body: bytes) -> tuple[list[bytes], bytes]:
    """A chunked body's chunk-size lines and its trailer section, found as h11 finds them
    (nothing if the body is not chunked)."""
    sizes: list[bytes] = []
    at = 0
    while (end := body.find(b"\r\n", at)) >= 0:
        line = body[at:end]
        size = re.match(rb"[0-9A-Fa-f]{1,20}", line)
        if size is None:
            return [], b""
        sizes.append(line)
        at = end + 2
        if int(size[0], 16) == 0:
            return sizes, body[at:]
        at += int(size[0], 16) + 2
    return sizes, b""


def _raw_values(message: Delimited, name: bytes) -> list[bytes]:
    """The values of the fields named `name`, as sent (whitespace around them kept)."""
    values = []
    for line in message.field_lines:
        field, colon, value = line.partition(b":")
        if colon and field.strip(_OWS).lower() == name:
            values.append(value)
    return values


def _field_values(message: Delimited, name: bytes) -> list[bytes]:
    return [v.strip(_OWS) for v in _raw_values(message, name)]


def _names_upgrade(message: Delimited) -> bool:
    """`Connection: upgrade` and an Upgrade field: what llhttp takes for an upgrade."""
    tokens = b",".join(_field_values(message, b"connection")).lower().split(b",")
    asks = b"upgrade" in [t.strip(_OWS) for t in tokens]
    return asks and bool(_field_values(message, b"upgrade"))


def _is_upgrade(message: Delimited) -> bool:
    """Whether llhttp takes the request for an upgrade (it stops parsing after the head)."""
    return message.head.startswith(b"CONNECT ") or _names_upgrade(message)


# -- STRICTER: what the codec refuses and h11 reads ------------------------------------------


def _bare_lf(message: Delimited) -> bool:
    """Documented: "bare LF line endings" (h11 takes them, in heads and trailers)."""
    return re.search(rb"(?<!\r)\n", message.head + message.trailer_section) is not None


def _obs_fold(message: Delimited) -> bool:
    """Documented: "obs-fold (continuation lines)" (h11 unfolds them)."""
    return any(line[:1] in (b" ", b"\t") for line in message.field_lines)


def _control_in_field(message: Delimited) -> bool:
    """Documented: NUL, a bare CR "and any other malformed header value": RFC 9110 5.5
    allows visible characters, SP, HTAB and obs-text; h11 also takes DEL and other
    controls."""
    return any(re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", line) for line in message.field_lines)


def _length_with_chunked(message: Delimited) -> bool:
    """Documented: "Content-Length together with Transfer-Encoding" (h11: chunked wins).
    llhttp also counts a Content-Length or Transfer-Encoding trailer (RFC 9110 6.5.1:
    framing fields must not be trailers)."""
    return bool(_field_values(message, b"content-length")) and bool(
        _field_values(message, b"transfer-encoding")
    )


def _duplicate_length(message: Delimited) -> bool:
    """Documented: "a duplicate or list-valued Content-Length" (h11 merges equal ones)."""
    values = _field_values(message, b"content-length")
    return len(values) > 1 or any(b"," in v for v in values)


def _transfer_encoding_trailer(message: Delimited) -> bool:
    """RFC 9110 6.5.1: Transfer-Encoding must not be a trailer; llhttp refuses one, h11
    keeps it as a trailer."""
    trailers = _lines(message.trailer_section)
    return any(t.lower().startswith(b"transfer-encoding") for t in trailers)


def _request_version(message: Delimited) -> bool:
    """Documented: "an HTTP version other than 1.0 and 1.1" (h11 takes any 1.x)."""
    return re.search(rb" HTTP/1\.[01]$", message.start_line) is None


def _upgrade_with_chunked_body(message: Delimited) -> bool:
    """Documented: "an upgrade request with a chunked body" (CONNECT is an upgrade)."""
    return _is_upgrade(message) and bool(_field_values(message, b"transfer-encoding"))


def _target_form(message: Delimited) -> bool:
    """Documented as "any other malformed request line": llhttp reads a target as
    origin-form (`/...`), asterisk-form (`*`) or an absolute URI with an authority
    (`scheme://...`) unless the method is CONNECT; h11 takes any run of visible
    characters. RFC 9112 3.2.3 keeps the authority-form (`host:port`) for CONNECT."""
    method, _, rest = message.start_line.partition(b" ")
    target = rest.lstrip(b" ").split(b" ", 1)[0]
    known = re.match(rb"[/*]|[A-Za-z][A-Za-z0-9+.-]*://", target) is not None
    return method != b"CONNECT" and not known


def _absolute_form_not_http(message: Delimited) -> bool:
    """The codec refuses an absolute-form target it cannot put in origin form: a scheme
    other than http(s), or a fragment (`invalid request target`)."""
    method, _, rest = message.start_line.partition(b" ")
    target = rest.lstrip(b" ").split(b" ", 1)[0]
    absolute = not target.startswith((b"/", b"*"))
    return method != b"CONNECT" and absolute and _ABSOLUTE_FORM.fullmatch(target) is None


def _chunk_line_grammar(message: Delimited) -> bool:
    """llhttp holds chunk-size lines to RFC 9112 7.1.1 (`;name[=token|"quoted"]`, no
    whitespace: RFC 9110 5.6.3 says senders must not send it); h11 skips whatever
    follows the size's `;`. Stricter, as the module docs say of chunked bodies."""
    return not all(_CHUNK_LINE.fullmatch(line) for line in message.chunk_lines)


#: LLHTTP's request methods (llhttp/src/llhttp/constants.ts, HTTP mode).
LLHTTP_METHODS = frozenset(
    b"DELETE GET HEAD POST PUT CONNECT OPTIONS TRACE COPY LOCK MKCOL MOVE PROPFIND PROPPATCH "
    b"SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY "
    b"SUBSCRIBE UNSUBSCRIBE PATCH PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split()
)


def _extension_method(message: Delimited) -> bool:
    # KNOWN FINDING: RFC 9110 9.1 allows any token as a method, and h11 takes them;
    # llhttp knows a fixed list, so `FOO / HTTP/1.1` gets 400. Reproduced by
    # test_codec_h1_findings.py::test_an_extension_method_is_a_request.
    return message.start_line.split(b" ", 1)[0] not in LLHTTP_METHODS


def _chunked_with_trailing_whitespace(message: Delimited) -> bool:
    # llhttp does not take `Transfer-Encoding: chunked<HTAB>` for chunked (RFC 9110 5.5:
    # the whitespace is not part of the value; h11 drops it). A request gets 400; a
    # response is an upstream protocol error (502), where it used to be read until the
    # close with its chunk framing as body bytes.
    return any(v != v.rstrip(_OWS) for v in _raw_values(message, b"transfer-encoding"))


def _control_in_reason(message: Delimited) -> bool:
    """RFC 9112 4: a reason phrase is HTAB, SP, VCHAR and obs-text; the codec refuses the
    rest (the server codec would write it to the client), h11 takes DEL."""
    reason = message.start_line.split(b" ", 2)[2:]
    return bool(reason) and re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", reason[0]) is not None


Allowance = Callable[[Delimited], bool]

#: Why the codec may refuse a request that h11 reads.
REQUEST_ALLOWANCES: dict[str, Allowance] = {
    "bare LF": _bare_lf,
    "obs-fold": _obs_fold,
    "control character in a field": _control_in_field,
    "Content-Length with Transfer-Encoding": _length_with_chunked,
    "duplicate or list Content-Length": _duplicate_length,
    "Transfer-Encoding trailer": _transfer_encoding_trailer,
    "HTTP version other than 1.0 and 1.1": _request_version,
    "upgrade request with a chunked body": _upgrade_with_chunked_body,
    "target form that does not fit the method": _target_form,
    "absolute-form target that is not http(s)": _absolute_form_not_http,
    "chunk line outside RFC 9112 grammar": _chunk_line_grammar,
    "chunked with trailing whitespace": _chunked_with_trailing_whitespace,
    "extension method (known finding)": _extension_method,
}


# -- LENIENT: what the codec reads and h11 refuses ---------------------------------------------


def _empty_lines_first(message: bytes) -> bytes:
    """RFC 9112 2.2: a server SHOULD ignore at least one empty line received before a
    request-line. llhttp skips any CR and LF there, h11 none; they carry nothing, so
    skipping them cannot change how a request is framed."""
    return message.lstrip(b"\r\n")


def _request_line_whitespace(message: bytes) -> bytes:
    """RFC 9112 3: a recipient MAY split the request-line on runs of SP. llhttp does, h11
    does not; harmless behind the gateway, which writes its own request line upstream."""
    line, eol, rest = message.partition(b"\r\n")
    return re.sub(rb"  +", b" ", line) + eol + rest


REQUEST_LENIENCIES = (_empty_lines_first, _request_line_whitespace)


# -- comparing -------------------------------------------------------------------------------


def _comparable(message: Message) -> Message:
    """What h11 normalises on the way in, applied to both sides so that only framing and
    content are compared: h11 lower-cases Transfer-Encoding's value (the codec compares it
    case-insensitively and never forwards it: bodies are re-framed). And trailers that may
    not be trailers (a Content-Length trailer, say) are left out: llhttp does not report
    some of them, h11 does, and the stream drops them all before anyone sees them
    (headers.py, strip_trailer_fields)."""
    headers = tuple((n, v.lower() if n == b"transfer-encoding" else v) for n, v in message.headers)
    trailers = tuple(
        (n, v)
        for n, v in message.trailers
        if n.decode("latin-1").lower() not in NOT_TRAILERS and not n.startswith(b":")
    )
    return attrs.evolve(message, headers=headers, trailers=trailers)


_ABSOLUTE_FORM = re.compile(rb"(?i:https?)://([^/?#]+)([^#]*)")


def _in_origin_form(message: Message) -> Message:
    """An h11 request as the codec hands it on: an absolute-form target (RFC 9112 3.2.2)
    becomes its path, and its authority the Host (replacing any, at the end)."""
    method, target = message.start
    m = _ABSOLUTE_FORM.fullmatch(target)
    if m is None or method == b"CONNECT":
        return message
    path = m[2] if m[2].startswith(b"/") else b"/" + m[2]
    headers = (*tuple(f for f in message.headers if f[0] != b"host"), (b"host", m[1]))
    return attrs.evolve(message, start=(method, path), headers=headers)


def delimit_requests(data: bytes) -> list[Delimited]:
    """The requests h11 finds in `data`, fed a byte at a time so that each event's offset
    is known; the last may be one h11 refused or did not see end."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
    found: list[Delimited] = []
    start = head_end = 0
    for offset in range(1, len(data) + 1):
        conn.receive_data(data[offset - 1 : offset])
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return [*found, Delimited(start, data[start:], b"")]
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.Request):
                head_end = offset
            elif isinstance(event, h11.EndOfMessage):
                found.append(Delimited(start, data[start:head_end], data[head_end:offset]))
                start = offset
                if conn.their_state is not h11.DONE or conn.our_state is not h11.SEND_RESPONSE:
                    return found
                conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is not h11.DONE:
                    return found
                conn.start_next_cycle()
    if start < len(data):
        end = head_end if head_end > start else len(data)
        found.append(Delimited(start, data[start:end], data[end:]))
    return found


def request_difference(data: bytes, codec: Transcript) -> str | None:
    """None if the codec framed the requests in `data` as h11 does, up to the listed
    differences; else what differs."""
    oracle = h11_requests([data])
    for _ in range(8):  # a rewrite per round, of one refused request each
        found = _first_request_difference(data, codec, oracle)
        if not isinstance(found, int):
            return found
        refused = delimit_requests(data)[found]
        original = data[refused.start :]
        rewritten = original
        for rewrite in REQUEST_LENIENCIES:
            rewritten = rewrite(rewritten)
        if rewritten == original:
            return f"the codec read request {found} of {data!r}, which h11 refuses"
        data = data[: refused.start] + rewritten
        oracle = h11_requests([data])
    raise AssertionError(f"rewrites do not converge on {data!r}")


def _first_request_difference(
    data: bytes, codec: Transcript, oracle: Transcript
) -> str | int | None:
    """None, a finding, or the index of a request where h11 refused what the codec read."""
    ours = [_comparable(m) for m in codec.messages]
    theirs = [_comparable(_in_origin_form(m)) for m in oracle.messages]
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a != b:
            return f"request {i} framed differently:\n  codec {a}\n  h11   {b}"
    if len(ours) == len(theirs) and codec.end == STOPPED:
        # The codec ended the connection after the same requests (a close, an upgrade, an
        # Upgrade field even empty, which h11 ignores): it never reads what h11 went on to
        # read or refuse.
        return None
    if len(ours) > len(theirs) or (oracle.end == ERROR and codec.end != ERROR):
        return len(theirs)
    if len(ours) == len(theirs):
        if codec.end == oracle.end or ERROR not in (codec.end, oracle.end):
            return None
        return f"after {len(ours)} request(s): codec {codec.end}, h11 {oracle.end}"
    if codec.end != ERROR:
        return f"the codec ended ({codec.end}) where h11 read on: {oracle.messages[len(ours)]}"
    refused = delimit_requests(data)[len(ours)]
    if any(applies(refused) for applies in REQUEST_ALLOWANCES.values()):
        return None
    return f"the codec refused request {len(ours)} ({refused}), which h11 reads"


def split_difference(split: Transcript, whole: Transcript) -> str | None:
    """None if the codec framed a stream cut into reads as it framed it in one read."""
    if split == whole:
        return None
    return f"split {split}\n  whole {whole}"


# -- responses -------------------------------------------------------------------------------


def _response_version(message: Delimited) -> bool:
    """The codec reads HTTP/1.0 and 1.1 responses only; h11 reads any 1.x."""
    return re.match(rb"HTTP/1\.[01] ", message.start_line) is None


def _http10_interim(message: Delimited) -> bool:
    """llhttp takes an HTTP/1.0 1xx for the connection's last message (1.0 without
    keep-alive) and refuses the final response after it; h11 reads on. RFC 9110 15.2: a
    server must not send 1xx to HTTP/1.0 clients, and the gateway asks in HTTP/1.1."""
    return re.match(rb"[\r\n]*HTTP/1\.0 1\d\d", message.head) is not None


def _switch_without_upgrade(message: Delimited) -> bool:
    """The client codec refuses a 101 that lacks `Connection: upgrade` and Upgrade (a
    tunnel it could not name; RFC 9110 7.8 requires Upgrade); h11 switches anyway."""
    return re.match(rb"[\r\n]*\S+ 101", message.head) is not None and not _names_upgrade(message)


def _status_out_of_range(message: Delimited) -> bool:
    """RFC 9110 15: a status outside 100-599 is invalid. The client codec refuses it (502):
    000-099 was taken for interim and never ended, 600-999 would reach the client; h11
    reads any three digits."""
    status = re.match(rb"[\r\n]*\S+ (\d{3})", message.head)
    return status is not None and not 100 <= int(status[1]) <= 599


#: Why the codec may refuse a response that h11 reads; each predicate sees one response
#: head of the exchange (interim or final) with what follows it.
RESPONSE_ALLOWANCES: dict[str, Allowance] = {
    "bare LF": _bare_lf,
    "obs-fold": _obs_fold,
    "control character in a field": _control_in_field,
    "Content-Length with Transfer-Encoding": _length_with_chunked,
    "duplicate or list Content-Length": _duplicate_length,
    "Transfer-Encoding trailer": _transfer_encoding_trailer,
    "HTTP version other than 1.0 and 1.1": _response_version,
    "chunk line outside RFC 9112 grammar": _chunk_line_grammar,
    "HTTP/1.0 interim response": _http10_interim,
    "101 without Connection: upgrade and Upgrade": _switch_without_upgrade,
    "chunked with trailing whitespace": _chunked_with_trailing_whitespace,
    "control character in the reason phrase": _control_in_reason,
    "status outside 100-599": _status_out_of_range,
}


def _transfer_encoding_trailer_taken(message: Delimited) -> bool:
    """The client codec takes a Transfer-Encoding trailer that h11 refuses (h11 takes only
    a single `chunked`); RFC 9110 6.5.1: framing fields are not trailers, and the stream
    drops it before anyone sees it (headers.py, strip_trailer_fields; tested by
    test_codec_h1_findings.py::test_a_transfer_encoding_trailer_is_not_relayed)."""
    return any(t.lower().startswith(b"transfer-encoding") for t in _lines(message.trailer_section))


#: What the client codec reads and h11 refuses, and why that is harmless.
RESPONSE_KNOWN_LENIENCIES: dict[str, Allowance] = {
    "Transfer-Encoding trailer": _transfer_encoding_trailer_taken,
}


def delimit_responses(data: bytes) -> list[Delimited]:
    """The interim (1xx) responses in `data`, then the final one (101 included)."""
    found: list[Delimited] = []
    start = 0
    for end in re.finditer(rb"\r?\n\r?\n", data):
        if end.start() < start:
            continue
        head = data[start : end.end()]
        if not re.match(rb"[\r\n]*HTTP/\d\.\d 1\d\d ", head) or re.match(rb"[\r\n]*\S+ 101", head):
            return [*found, Delimited(start, head, data[end.end() :])]
        found.append(Delimited(start, head, b""))
        start = end.end()
    return [*found, Delimited(start, data[start:], b"")]


def _skip_empty_lines(data: bytes) -> bytes:
    """llhttp skips CR and LF before a status line, as before a request line (see
    _empty_lines_first); h11 does not."""
    return b"".join(
        attrs.evolve(d, head=d.head.lstrip(b"\r\n")).head + d.rest for d in delimit_responses(data)
    )


def _unanswered(transcript: Transcript) -> bool:
    """The router answers 502 whether the upstream broke protocol or closed before its
    response ended (router.py: UpstreamReset), so these outcomes are one."""
    return not transcript.messages and transcript.end in (ERROR, CLOSED, CUT)


def _whole_body_broken_trailers(codec: Transcript, oracle: Transcript) -> bool:
    """h11 refused the response in its trailer section, after the whole chunked body; the
    client codec relayed that body, ended without trailers, and stopped: it counts a
    protocol error and closes the connection, never reusing it
    (codec_h1_client.ClientCodec._stop). Nothing of the broken section reaches the
    client, and nothing after it is read as another response."""
    if len(codec.messages) != 1 or codec.end != STOPPED or oracle.messages:
        return False
    partial = oracle.partial
    if oracle.end != ERROR or partial is None:
        return False
    relayed = codec.messages[0]
    return not relayed.trailers and _comparable(relayed) == _comparable(
        attrs.evolve(partial, trailers=())
    )


def response_difference(
    data: bytes, method: str, codec: Transcript, *, upgrade: bool = False
) -> str | None:
    """None if the codec framed the response to a `method` request (asking to upgrade,
    if `upgrade`) in `data` as h11 does, up to the listed differences; else what
    differs."""
    oracle = h11_response(method, [data], upgrade=upgrade)
    if codec.messages and _unanswered(oracle):
        oracle = h11_response(method, [_skip_empty_lines(data)], upgrade=upgrade)
    ours = [_comparable(m) for m in codec.messages]
    theirs = [_comparable(m) for m in oracle.messages]
    if _unanswered(codec) and _unanswered(oracle):
        return None
    if _whole_body_broken_trailers(codec, oracle):
        return None
    if ours == theirs and (codec.end == oracle.end or ERROR not in (codec.end, oracle.end)):
        return None
    heads = delimit_responses(data)
    if _unanswered(codec) != _unanswered(oracle):
        # The one that answered read what the other refused.
        allowances = RESPONSE_ALLOWANCES if _unanswered(codec) else RESPONSE_KNOWN_LENIENCIES
        if any(applies(d) for d in heads for applies in allowances.values()):
            return None
    return f"codec {ours} ({codec.end}); h11 {theirs} ({oracle.end})"
