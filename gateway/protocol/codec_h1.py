"""HTTP/1.1 codecs: bytes in, gateway events out; heads in, bytes out. No I/O. What both
codecs (`ServerCodec` in codec_h1_server.py, `ClientCodec` in codec_h1_client.py) and both
parsers share: the event queue, body framing out, connection reuse, head encoding.

Two parsers can do the parsing, chosen per listener and per cluster (`http1_parser`):
llhttp (Node.js's parser, in C, through httptools), the default, and h11 (pure Python,
through codec_h1_h11.py, which gives the codecs llhttp's callbacks). The codecs are written
against llhttp's callback interface, which httptools calls directly: the default path has
no layer in between.

llhttp is strict by default, and that strictness is most of a proxy's defence against
request smuggling: bare LF line endings, obs-fold, bare CR, NUL, whitespace before a
colon, Content-Length together with Transfer-Encoding, duplicate or list-valued
Content-Length, and chunk sizes that overflow all end in a parse error, which the server
codec turns into 400 + close (the h11 parser holds heads and trailers to the same rules).
On top of the parser the codecs check what it leaves to the application: HTTP/1.x only (no
HTTP/0.9), exactly one Host on HTTP/1.1, Transfer-Encoding exactly `chunked`, the head size
(431) and the header count (431). Bodies are always re-framed from the parsed head (chunk
sizes are ours, never the peer's), so no upstream sees a framing the gateway did not choose.

The parsers parse eagerly: a read that holds the end of one request and the start of the
next yields both messages' events at once. The codec queues them and hands them out one
exchange at a time, as the connection manager asks (pipelining), and it does the
connection-level bookkeeping of HTTP/1.1 itself: keep-alive, 100-continue, upgrades, and
the framing of what it sends (Content-Length, chunked, or close-delimited for HTTP/1.0).

Why llhttp is the default: h11 cost about 90 us per proxied request on this project's
machine (a request and a response parsed and serialised on each side), a third of the
gateway's whole per-request time; llhttp does the same parsing in C. See
docs/performance.md. h11 takes what llhttp refuses by its fixed list (an extension method,
RFC 9110 9.1), for those who need it.
"""

import http
import re
from collections import deque
from typing import Literal, Protocol, cast

import httptools

from gateway.errors import DownstreamProtocolError, GatewayError
from gateway.protocol.codec_h1_h11 import (
    H11ParseError,
    H11RequestParser,
    H11ResponseParser,
    H11Upgrade,
    RequestCallbacks,
    ResponseCallbacks,
)
from gateway.protocol.events import (
    ConnectionEnded,
    Data,
    EndStream,
    NeedData,
    Paused,
    RequestHeaders,
    ResponseHeaders,
)
from gateway.protocol.headers import HeaderMap

#: Which parser a codec runs (the `http1_parser` key of listeners and clusters).
Http1Parser = Literal["llhttp", "h11"]

REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
#: Header lines as we send them: a token name, and a value without CR, LF or NUL (which
#: would end the line early and let a value forge headers). One match checks a whole head.
_FIELDS_RE = re.compile(rf"{_TOKEN}: [^\r\n\x00]*(?:\r\n{_TOKEN}: [^\r\n\x00]*)*", re.ASCII)
NO_BODY_STATUSES = frozenset({204, 304})

ServerEvent = RequestHeaders | Data | EndStream | ConnectionEnded | NeedData | Paused
ClientEvent = ResponseHeaders | Data | EndStream | ConnectionEnded | NeedData
_Parsed = RequestHeaders | ResponseHeaders | Data | EndStream | ConnectionEnded
#: A parse error is queued after the events before it, and stays at the head of the queue.
_Queued = _Parsed | GatewayError


class Parser(Protocol):
    """What the codecs ask of a parser besides its callbacks: httptools' interface, which
    codec_h1_h11's parsers also have."""

    def feed_data(self, data: bytes) -> None: ...
    def get_http_version(self) -> str: ...
    def should_upgrade(self) -> bool: ...


class RequestParser(Parser, Protocol):
    def get_method(self) -> bytes: ...


class ResponseParser(Parser, Protocol):
    def get_status_code(self) -> int: ...


def request_parser(
    name: Http1Parser, protocol: RequestCallbacks, max_header_bytes: int
) -> RequestParser:
    """A parser of requests that calls `protocol`'s llhttp callbacks."""
    if name == "h11":
        return H11RequestParser(protocol, max_header_bytes)
    return httptools.HttpRequestParser(protocol)


def response_parser(
    name: Http1Parser, protocol: ResponseCallbacks, max_header_bytes: int
) -> ResponseParser:
    """A parser of responses that calls `protocol`'s llhttp callbacks."""
    if name == "h11":
        return H11ResponseParser(protocol, max_header_bytes)
    return httptools.HttpResponseParser(protocol)


def encode_fields(items: list[tuple[str, str]]) -> str:
    """Header lines, each ending in CRLF; ValueError for a name or value HTTP/1.1 cannot
    carry (a bug in a filter, or a header set from configuration)."""
    if not items:
        return ""
    text = "\r\n".join([f"{n}: {v}" for n, v in items])
    # A CRLF inside a name or value could still form valid-looking lines: count them too.
    if _FIELDS_RE.fullmatch(text) is None or text.count("\r\n") != len(items) - 1:
        raise ValueError(f"a header cannot be sent over HTTP/1.1: {items!r}")
    return text + "\r\n"


def encode_head(start_line: str, items: list[tuple[str, str]]) -> bytes:
    """A message head; also the last chunk with its trailers (start line "0")."""
    try:
        return f"{start_line}\r\n{encode_fields(items)}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"a header is not latin-1: {items!r}") from None


def connection_tokens(headers: HeaderMap) -> set[str] | frozenset[str]:
    values = headers.get_all("connection")
    if not values:
        return _NO_TOKENS
    return {t.strip().lower() for v in values for t in v.split(",")}


_NO_TOKENS: frozenset[str] = frozenset()


_ABSOLUTE_FORM = re.compile(r"(?i:https?)://([^/?#]+)([^#]*)")


def origin_form(target: str) -> tuple[str, str]:
    """An absolute-form target's (path with query, authority); 400 for anything else."""
    m = _ABSOLUTE_FORM.fullmatch(target)
    if m is None:
        raise DownstreamProtocolError("invalid request target")
    path = m[2] if m[2].startswith("/") else "/" + m[2]
    return path, m[1]


class Http1Codec:
    """What both roles share: the event queue, body framing out, and connection reuse."""

    _parser: Parser

    def __init__(self, max_header_bytes: int) -> None:
        self._max_header_bytes = max_header_bytes
        self.stream_id = 0
        self._events: deque[_Queued] = deque()
        # -- the message being parsed (parse order, which may run ahead of the exchange)
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self._trailers: list[tuple[bytes, bytes]] | None = None
        self._head_size = 0
        #: A message has begun and is not complete yet (`_in_head`: nor is its head).
        self._in_message = False
        self._in_head = False
        #: Bytes received while a head was incomplete: bounds a head that never ends.
        self._partial_head = 0
        #: A head began in the read being parsed.
        self._head_began = False
        #: A message's head says its body runs until the connection closes.
        self._body_until_eof = False
        #: Set by a parse error or an upgrade: later bytes are not parsed.
        self._stopped = False
        #: Bytes after an upgrade handshake's head (the tunnel's, or the next request's).
        self._trailing = b""
        # -- the exchange (the message the connection manager is working on)
        #: Their message's end was handed out.
        self._their_done = False
        #: Our message's end was encoded.
        self._our_done = False
        #: Both sides allow the connection to carry another exchange.
        self._keep_alive = True
        #: A write failed or was cut: the connection is never reused.
        self._failed = False
        # -- what we are sending
        self._chunked = False
        #: Body bytes still owed under our Content-Length (None: not length-framed).
        self._send_remaining: int | None = None
        self.trailers_dropped = 0

    # -- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feeds bytes from the socket; b"" means the peer closed its side."""
        if self._stopped:
            if not self._events or not isinstance(self._events[-1], GatewayError):
                self._trailing += data
            return
        if not data:
            self._events.append(self._end_of_input())
            self._stopped = True
            return
        self._head_began = False
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserUpgrade, H11Upgrade) as upgrade:
            self._stopped = True
            self._trailing = data[upgrade.args[0] :]
            self._upgraded()
        except httptools.HttpParserCallbackError as exc:
            self._stop(exc.__context__ if isinstance(exc.__context__, GatewayError) else exc)
        except (httptools.HttpParserError, H11ParseError, GatewayError) as exc:
            # (h11's parser lets a callback's GatewayError through as it is.)
            self._stop(exc)
        else:
            # Head bytes count from where the head starts: a read that began it may also
            # hold whole messages before it (pipelining, a body's end). A head that began
            # in an earlier read owns all of this one. (llhttp gives no offsets, so the
            # first read's share is left out: at most one read past the limit.)
            if self._in_head and not self._head_began:
                self._partial_head += len(data)
                if self._partial_head > self._max_header_bytes:
                    self._stop(self._head_too_large())

    def _stop(self, error: BaseException) -> None:
        self._stopped = True
        self._events.append(
            error if isinstance(error, GatewayError) else self._protocol_error(str(error))
        )

    def _end_of_input(self) -> _Queued:
        if self._body_until_eof:
            self._body_until_eof = False
            return EndStream(self.stream_id)
        if self._in_message:
            return self._protocol_error("connection closed in the middle of a message")
        return ConnectionEnded()

    def _upgraded(self) -> None:
        """The parser stopped after an upgrade handshake's head."""

    def _protocol_error(self, reason: str) -> GatewayError:
        raise NotImplementedError

    def _head_too_large(self) -> GatewayError:
        raise NotImplementedError

    # llhttp callbacks, shared by both roles.

    def on_message_begin(self) -> None:
        self._raw_headers = []
        self._trailers = None
        self._head_size = 0
        self._in_message = self._in_head = self._head_began = True
        self._partial_head = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp keeps the whitespace after a value, which is not part of it (RFC 9110 5.5):
        # kept, `X-Role: guest ` would pass a deny on "guest" and `Host: a.test ` escape
        # the virtual host of a.test.
        value = value.strip(b" \t")
        if not self._in_head:
            if self._trailers is None:
                self._trailers = []
            self._trailers.append((name.lower(), value))
            return
        self._raw_headers.append((name.lower(), value))
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._max_header_bytes:
            raise self._head_too_large()

    def _end_head(self) -> HeaderMap:
        self._in_head = False
        self._partial_head = 0
        headers = HeaderMap.from_raw(self._raw_headers)
        self._raw_headers = []
        return headers

    def on_body(self, body: bytes) -> None:
        self._events.append(Data(self.stream_id, body))

    def _pop(self) -> _Parsed | None:
        if not self._events:
            return None
        if isinstance(self._events[0], GatewayError):
            # Stays queued: the connection is unusable from here on. Raised with no local
            # naming it, or its traceback would hold this frame, which would hold it.
            raise self._events[0]
        return cast(_Parsed, self._events.popleft())  # not an error: checked just above

    # -- output --------------------------------------------------------------------------

    def _frame_output(self, *, chunked: bool, length: int | None) -> None:
        """How our next body is framed: chunks, `length` bytes, or (neither) until we close."""
        self._our_done = False
        self._chunked = chunked
        self._send_remaining = length

    def send_data(self, data: bytes) -> bytes:
        if self._chunked:
            return b"%x\r\n%b\r\n" % (len(data), data) if data else b""
        if self._send_remaining is not None:
            self._send_remaining -= len(data)
            if self._send_remaining < 0:
                raise ValueError("more body than the Content-Length sent")
        return data

    def send_end(self, trailers: HeaderMap | None = None) -> bytes:
        """Ends the body; trailers go out only where the framing can carry them (chunked)."""
        self._our_done = True
        if self._chunked:
            return encode_head("0", list(trailers)) if trailers else b"0\r\n\r\n"
        if trailers:
            self.trailers_dropped += 1
        if self._send_remaining:
            self._failed = True
            raise ValueError("less body than the Content-Length sent")
        return b""

    def send_failed(self) -> None:
        """A write did not complete, so the connection is never reused."""
        self._failed = True

    @property
    def reusable(self) -> bool:
        """Both sides finished cleanly and keep-alive was not refused by either. (An error
        parsed ahead, in a pipelined request, waits its turn in the queue.)"""
        return self._their_done and self._our_done and self._keep_alive and not self._failed

    @property
    def protocol_error(self) -> bool:
        """The peer broke the protocol; the error waits in the queue (it may lie past the
        end of a message already handed out, as bytes after an upstream's response do)."""
        return bool(self._events) and isinstance(self._events[-1], GatewayError)

    def close(self) -> None:
        """The connection is over: parse nothing more, and let reference counting free the
        codec at once rather than the cyclic GC some time later. Two cycles run through it:
        the parser holds the codec (llhttp's callbacks), and a queued parse
        error's traceback holds the frames that hold the codec."""
        self._stopped = True
        self._events.clear()
        del self._parser

    def take_trailing_data(self) -> bytes:
        """After a protocol switch: the bytes read past the handshake."""
        data, self._trailing = self._trailing, b""
        return data

    def start_next_cycle(self) -> None:
        assert self.reusable
        self._their_done = self._our_done = False
        self._chunked = False
        self._send_remaining = None
