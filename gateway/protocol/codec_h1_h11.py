"""HTTP/1.1 parsing with h11, shaped as llhttp's parsers in httptools, so that the codecs
(`ServerCodec`, `ClientCodec`) run on either one (`http1_parser = "h11"`). No I/O.

The codecs drive a parser through llhttp's callbacks (on_message_begin, on_url or
on_status, on_header, on_headers_complete, on_body, on_message_complete), read the parsed
start line back from it (get_method, get_status_code, get_http_version, should_upgrade),
and catch its upgrade and error exceptions. These classes make the same calls, in the same
order, from h11's events; every check the codecs add on top of the parser (one Host,
Transfer-Encoding exactly `chunked`, the head limits, response poisoning, ...) therefore
holds whichever parser runs, and the llhttp path has no layer in between.

h11 reads some bytes that llhttp's strict mode refuses, where a request could be read two
ways by two parsers on its path. Before h11 sees a head, it is held to llhttp's rules here:
no bare CR or LF, no obs-fold, no control character but HTAB in a line, no whitespace
before a colon, not Content-Length with Transfer-Encoding, not a duplicate or list-valued
Content-Length (h11 merges equal values); a chunked body's trailer section the same way,
and without framing fields (RFC 9110 6.5.1). What differs on purpose is in
docs/configuration.md (`http1_parser`): h11 takes any token as a method (RFC 9110 9.1;
llhttp knows a fixed list), and it reads `chunked` with whitespace after it as chunked.

How the adapter knows where a message starts without offsets from h11: it finds each
head's end itself and hands h11 exactly that head. A body framed by Content-Length is fed
no further than its end; a chunked (or close-delimited) one is fed whole, and what h11 did
not consume is taken back from h11's `trailing_data`. Each message gets a new
h11.Connection: the codec keeps the connection's state (keep-alive, pipelining, upgrades)
itself, as it does over llhttp.
"""

import re
from collections.abc import Sequence
from typing import Protocol

import h11

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
#: A field line as llhttp's strict mode takes it: a token, the colon, and a value of HTAB,
#: SP, visible characters and obs-text (RFC 9110 5.5). A line that starts with whitespace
#: (obs-fold) is no field line.
_FIELD = rb"%s:[\t\x20-\x7e\x80-\xff]*" % _TOKEN
_FIELD_LINE = re.compile(_FIELD)
#: A whole head, its start line checked for characters only (h11 reads its grammar).
_HEAD = re.compile(rb"[\t\x20-\x7e\x80-\xff]*\r\n(?:%s\r\n)*\r\n" % _FIELD)
#: What a head may not hold anywhere, checked as its bytes arrive (llhttp refuses them at
#: once): a control character other than HTAB, CR and LF; a LF without its CR; a CR
#: followed by anything but LF (a CR at the end of the bytes so far may still get its LF).
_BAD_BYTE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|(?<!\r)\n|\r(?=[^\n])")
_FRAMING = re.compile(rb"\r\n(content-length|transfer-encoding):([^\r]*)", re.IGNORECASE)
#: Where h11's error messages start quoting what the peer sent.
_PEER_BYTES = re.compile(r":? (?:b['\"]|bytearray\()")
#: The last chunk's line as h11 reads it (a size of zero, extensions).
_LAST_CHUNK = re.compile(rb"0{1,20}(?:;[^\r\n]*)?")
_FRAMING_FIELDS = (b"content-length", b"transfer-encoding")
#: The versions llhttp reads in a status line (the client codec keeps only 1.1 alive).
_LLHTTP_VERSIONS = ("0.9", "1.0", "1.1", "2.0")
#: Field names and values, as h11 gives them.
Fields = Sequence[tuple[bytes, bytes]]
#: Asked of every response, so that h11 reads a 101 (the codec decides whether it was due).
_ASK = [("host", "upstream"), ("connection", "upgrade"), ("upgrade", "upstream")]


class H11ParseError(Exception):
    """h11 refused the bytes, or they break a rule llhttp holds them to."""


class H11Upgrade(Exception):
    """The message ended with its head and what follows is another protocol's: args[0] is
    the offset, in the bytes fed, where that begins (as llhttp's HttpParserUpgrade)."""


class _Callbacks(Protocol):
    def on_message_begin(self) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


class RequestCallbacks(_Callbacks, Protocol):
    def on_url(self, url: bytes) -> None: ...


class ResponseCallbacks(_Callbacks, Protocol):
    def on_status(self, status: bytes) -> None: ...
    def on_chunk_header(self) -> None: ...


def _next_event(conn: h11.Connection) -> object:
    try:
        return conn.next_event()
    except h11.RemoteProtocolError as exc:
        # The reason goes into the 400's body: without the peer's bytes, which h11 quotes.
        raise H11ParseError(_PEER_BYTES.split(str(exc), maxsplit=1)[0]) from None


def _asks_upgrade(headers: Fields) -> bool:
    """`Connection: upgrade` and an Upgrade field, which is what llhttp calls an upgrade."""
    tokens = {t.strip() for n, v in headers if n == b"connection" for t in v.lower().split(b",")}
    return b"upgrade" in tokens and any(n == b"upgrade" for n, _ in headers)


class _H11Parser:
    """What both directions share: finding heads, checking them, feeding bodies."""

    def __init__(self, protocol: _Callbacks, max_header_bytes: int) -> None:
        self._callbacks = protocol
        self._max_header_bytes = max_header_bytes
        self._conn: h11.Connection | None = None
        #: The head received so far, or None between messages.
        self._head: bytearray | None = None
        #: A head was parsed and its body goes to h11.
        self._in_body = False
        #: Body bytes h11 may still take under Content-Length (None: chunked or until close).
        self._body_left: int | None = 0
        #: The last bytes of a chunked body, for its trailer section (None: not chunked).
        self._tail: bytearray | None = None
        self._version = "1.1"
        self._upgrade = False

    def get_http_version(self) -> str:
        return self._version

    def should_upgrade(self) -> bool:
        return self._upgrade

    def feed_data(self, data: bytes) -> None:
        at = 0
        while at < len(data):
            at = self._feed_body(data, at) if self._in_body else self._feed_head(data, at)

    def _new_connection(self) -> h11.Connection:
        raise NotImplementedError

    def _on_head(self, event: object, end: int) -> None:
        raise NotImplementedError

    # -- heads -----------------------------------------------------------------------------

    def _feed_head(self, data: bytes, at: int) -> int:
        """Takes head bytes from `at`; returns where the head's message goes on (its end
        when complete, else the end of `data`)."""
        head = self._head
        if head is None:
            # RFC 9112 2.2: empty lines before a start line are skipped, as llhttp does.
            while at < len(data) and data[at] in b"\r\n":
                at += 1
            if at == len(data):
                return at
            head = self._head = bytearray()
            self._callbacks.on_message_begin()
        found = data.find(b"\r\n\r\n", at)
        end = found + 4 if found >= 0 else len(data)
        if head:  # the end may straddle the previous read and this one
            before = bytes(head[-3:])
            straddle = (before + data[at : at + 3]).find(b"\r\n\r\n")
            if straddle >= 0:
                end = at + straddle + 4 - len(before)
        piece = data[at:end]
        # From the last byte held (its CR may now meet its LF), with one before it to look at.
        seen = bytes(head[-2:])
        if _BAD_BYTE.search(seen + piece, max(len(seen) - 1, 0)):
            raise H11ParseError("a bare CR or LF, or a control character, in a message head")
        head += piece
        if not head.endswith(b"\r\n\r\n"):
            return end
        self._head = None
        self._parse_head(bytes(head), end)
        # Its body now, even with no byte of it here: a message without one ends at once.
        return self._feed_body(data, end) if self._in_body else end

    def _parse_head(self, head: bytes, end: int) -> None:
        if _HEAD.fullmatch(head) is None:
            raise H11ParseError("invalid header line (obs-fold, or a space before the colon)")
        framing = [(n.lower(), v) for n, v in _FRAMING.findall(head)]
        lengths = [v for n, v in framing if n == b"content-length"]
        if lengths and len(lengths) < len(framing):
            raise H11ParseError("Transfer-Encoding can't be present with Content-Length")
        if len(lengths) > 1 or b"," in b"".join(lengths):
            raise H11ParseError("Duplicate Content-Length")
        if self._conn is None:
            self._conn = self._new_connection()
        self._conn.receive_data(head)
        self._on_head(_next_event(self._conn), end)

    def _report_fields(self, raw_fields: Fields) -> None:
        on_header = self._callbacks.on_header
        for name, value in raw_fields:
            on_header(name, value)

    def _upgraded(self, end: int) -> None:
        """Ends the message with its head, as llhttp ends an upgrade's."""
        self._conn = None
        self._callbacks.on_message_complete()
        raise H11Upgrade(end)

    # -- bodies ----------------------------------------------------------------------------

    def _begin_body(self, headers: Fields, *, bodyless: bool, default: int | None) -> None:
        """After a head: its body is none (`bodyless`), chunked, `Content-Length` long, or
        else `default` long (None: until the close)."""
        self._in_body = True
        chunked, length = False, default
        if not bodyless:
            for name, value in headers:
                if name == b"transfer-encoding":
                    chunked = True
                elif name == b"content-length":
                    length = int(value)
        self._tail = bytearray() if chunked else None
        self._body_left = None if chunked else 0 if bodyless else length

    def _feed_body(self, data: bytes, at: int) -> int:
        conn = self._conn
        assert conn is not None
        left = self._body_left
        piece = data[at:] if left is None else data[at : at + left]
        if left is not None:
            self._body_left = left - len(piece)
        if piece:
            conn.receive_data(piece)
            if self._tail is not None:
                self._keep_tail(piece)
        while True:
            event = _next_event(conn)
            if event is h11.NEED_DATA:
                return len(data)
            if isinstance(event, h11.Data):
                self._callbacks.on_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                unread = len(conn.trailing_data[0]) if left is None else 0
                self._end_body(event, unread)
                return at + len(piece) - unread
            else:  # nothing else comes before a message's end
                raise H11ParseError(f"unexpected {event!r}")

    def _keep_tail(self, piece: bytes) -> None:
        """Keeps the body's end: this read, and as much before it as a trailer section h11
        has to wait for may hold (h11 refuses more: its max_incomplete_event_size)."""
        tail = self._tail
        assert tail is not None
        tail += piece
        keep = self._max_header_bytes + 256 + len(piece)
        if len(tail) > 2 * keep:
            del tail[:-keep]

    def _end_body(self, event: h11.EndOfMessage, unread: int) -> None:
        self._in_body = False
        self._conn = None
        if self._tail is not None:
            self._check_trailers(bytes(self._tail[: len(self._tail) - unread]), event.headers)
            self._report_fields(event.headers.raw_items())
        self._tail = None
        self._callbacks.on_message_complete()

    @staticmethod
    def _check_trailers(body_end: bytes, trailers: Fields) -> None:
        """The trailer section as sent (the end of the chunked body h11 consumed): each of
        the fields h11 read is one strict field line, the last chunk's line before them and
        CRLF after them, so a bare LF or a fold anywhere in it shows as a line that is not;
        and no framing field is a trailer (RFC 9110 6.5.1)."""
        lines = body_end.split(b"\r\n")
        count = len(trailers)
        fields = lines[-2 - count : -2]
        if (
            len(lines) < count + 3
            or lines[-2:] != [b"", b""]
            or _LAST_CHUNK.fullmatch(lines[-3 - count]) is None
            or not all(_FIELD_LINE.fullmatch(line) for line in fields)
        ):
            raise H11ParseError("invalid trailer section")
        if any(name in _FRAMING_FIELDS for name, _ in trailers):
            raise H11ParseError("a framing field in the trailers")


class H11RequestParser(_H11Parser):
    """The server side: requests (httptools.HttpRequestParser's interface)."""

    _callbacks: RequestCallbacks

    def __init__(self, protocol: RequestCallbacks, max_header_bytes: int) -> None:
        super().__init__(protocol, max_header_bytes)
        self._method = b""

    def get_method(self) -> bytes:
        return self._method

    def _new_connection(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_header_bytes)

    def _on_head(self, event: object, end: int) -> None:
        assert isinstance(event, h11.Request), event  # h11 refuses a whole head, or reads it
        self._method = bytes(event.method)
        self._version = event.http_version.decode("ascii")
        headers = event.headers
        self._callbacks.on_url(bytes(event.target))
        self._report_fields(headers.raw_items())
        self._upgrade = event.method == b"CONNECT" or _asks_upgrade(headers)
        self._callbacks.on_headers_complete()
        if self._upgrade:
            self._upgraded(end)
        self._begin_body(headers, bodyless=False, default=0)


class H11ResponseParser(_H11Parser):
    """The client side: responses (httptools.HttpResponseParser's interface). Like llhttp,
    it is not told the request's method: the codec ends the answer to HEAD itself."""

    _callbacks: ResponseCallbacks

    def __init__(self, protocol: ResponseCallbacks, max_header_bytes: int) -> None:
        super().__init__(protocol, max_header_bytes)
        self._status = 0

    def get_status_code(self) -> int:
        return self._status

    def _end_body(self, event: h11.EndOfMessage, unread: int) -> None:
        if self._tail is not None:
            self._callbacks.on_chunk_header()  # the last chunk, as llhttp reports it
        super()._end_body(event, unread)

    def _new_connection(self) -> h11.Connection:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=self._max_header_bytes)
        conn.send(h11.Request(method="GET", target="/", headers=_ASK))
        conn.send(h11.EndOfMessage())
        return conn

    def _on_head(self, event: object, end: int) -> None:
        assert isinstance(event, h11.InformationalResponse | h11.Response), event
        self._status = event.status_code
        self._version = event.http_version.decode("ascii")
        if self._version not in _LLHTTP_VERSIONS:  # h11 reads any digit.digit
            raise H11ParseError(f"unsupported HTTP version {self._version}")
        headers = event.headers
        self._callbacks.on_status(bytes(event.reason))
        self._report_fields(headers.raw_items())
        self._upgrade = self._status == 101 and _asks_upgrade(headers)
        self._callbacks.on_headers_complete()
        if isinstance(event, h11.InformationalResponse):
            if self._status == 101:
                self._upgraded(end)
            self._callbacks.on_message_complete()  # the next head is the same exchange's
            return
        self._begin_body(headers, bodyless=self._status in (204, 304), default=None)
