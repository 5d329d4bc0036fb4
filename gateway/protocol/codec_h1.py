"""HTTP/1.1 codecs over llhttp (httptools): bytes in, gateway events out; heads in, bytes out.
No I/O.

llhttp (Node.js's parser, through httptools) does the parsing: request and status lines,
header syntax, Content-Length, chunked bodies and trailers. It is strict by default, and
that strictness is most of a proxy's defence against request smuggling: bare LF line
endings, obs-fold, bare CR, NUL, whitespace before a colon, Content-Length together with
Transfer-Encoding, duplicate or list-valued Content-Length, and chunk sizes that overflow
all end in a parse error, which the server codec turns into 400 + close. On top of it this
module checks what llhttp leaves to the application: HTTP/1.x only (no HTTP/0.9), exactly
one Host on HTTP/1.1, Transfer-Encoding exactly `chunked`, the head size (431) and the
header count (431). Bodies are always re-framed from the parsed head (chunk sizes are
ours, never the peer's), so no upstream sees a framing the gateway did not choose.

llhttp parses eagerly: a read that holds the end of one request and the start of the next
yields both messages' events at once. The codec queues them and hands them out one
exchange at a time, as the connection manager asks (pipelining), and it does the
connection-level bookkeeping of HTTP/1.1 itself: keep-alive, 100-continue, upgrades, and
the framing of what it sends (Content-Length, chunked, or close-delimited for HTTP/1.0).

Why not h11: h11 cost about 90 us per proxied request on this project's machine (a
request and a response parsed and serialised on each side), a third of the gateway's
whole per-request time; llhttp does the same parsing in C. See docs/performance.md.
"""

import http
import re
from collections import deque
from typing import cast

import httptools

from gateway.errors import DownstreamProtocolError, GatewayError, UpstreamReset
from gateway.protocol.events import (
    NEED_DATA,
    PAUSED,
    ConnectionEnded,
    Data,
    EndStream,
    NeedData,
    Paused,
    RequestHeaders,
    ResponseHeaders,
)
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead

_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
#: Header lines as we send them: a token name, and a value without CR, LF or NUL (which
#: would end the line early and let a value forge headers). One match checks a whole head.
_FIELDS_RE = re.compile(rf"{_TOKEN}: [^\r\n\x00]*(?:\r\n{_TOKEN}: [^\r\n\x00]*)*", re.ASCII)
_NO_BODY_STATUSES = frozenset({204, 304})

ServerEvent = RequestHeaders | Data | EndStream | ConnectionEnded | NeedData | Paused
ClientEvent = ResponseHeaders | Data | EndStream | ConnectionEnded | NeedData
_Parsed = RequestHeaders | ResponseHeaders | Data | EndStream | ConnectionEnded
#: A parse error is queued after the events before it, and stays at the head of the queue.
_Queued = _Parsed | GatewayError


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


def _encode_head(start_line: str, items: list[tuple[str, str]]) -> bytes:
    """A message head; also the last chunk with its trailers (start line "0")."""
    try:
        return f"{start_line}\r\n{encode_fields(items)}\r\n".encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"a header is not latin-1: {items!r}") from None


def _connection_tokens(headers: HeaderMap) -> set[str] | frozenset[str]:
    values = headers.get_all("connection")
    if not values:
        return _NO_TOKENS
    return {t.strip().lower() for v in values for t in v.split(",")}


_NO_TOKENS: frozenset[str] = frozenset()


_ABSOLUTE_FORM = re.compile(r"(?i:https?)://([^/?#]+)([^#]*)")


def _origin_form(target: str) -> tuple[str, str]:
    """An absolute-form target's (path with query, authority); 400 for anything else."""
    m = _ABSOLUTE_FORM.fullmatch(target)
    if m is None:
        raise DownstreamProtocolError("invalid request target")
    path = m[2] if m[2].startswith("/") else "/" + m[2]
    return path, m[1]


class _Codec:
    """What both roles share: the event queue, body framing out, and connection reuse."""

    _parser: httptools.HttpRequestParser | httptools.HttpResponseParser

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
        except httptools.HttpParserUpgrade as upgrade:
            self._stopped = True
            self._trailing = data[upgrade.args[0] :]
            self._upgraded()
        except httptools.HttpParserCallbackError as exc:
            self._stop(exc.__context__ if isinstance(exc.__context__, GatewayError) else exc)
        except httptools.HttpParserError as exc:
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

    # llhttp callbacks, shared by both parsers.

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
            return _encode_head("0", list(trailers)) if trailers else b"0\r\n\r\n"
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
        the parser holds the codec's bound methods (llhttp's callbacks), and a queued parse
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


class ServerCodec(_Codec):
    """The downstream side of an HTTP/1.1 connection (the gateway is the server)."""

    def __init__(self, *, max_header_bytes: int, max_header_count: int, scheme: str) -> None:
        super().__init__(max_header_bytes)
        self._max_header_count = max_header_count
        self._scheme = scheme
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        #: Whether the request being parsed has a body (when it has not, its RequestHeaders
        #: carries end_stream and its message end is not queued separately).
        self._parsing_body = False
        #: Body bytes of an upgrade request that llhttp handed over unparsed (see _upgraded).
        self._upgrade_body = 0
        self._client_version = "1.1"
        self._expecting_continue = False
        #: Bytes received for the exchanges after the current one (pipelining).
        self._next_bytes = 0

    # -- input ---------------------------------------------------------------------------

    def _protocol_error(self, reason: str) -> GatewayError:
        return DownstreamProtocolError(reason)

    def _head_too_large(self) -> GatewayError:
        return DownstreamProtocolError("request headers too large", 431)

    def receive_data(self, data: bytes) -> None:
        if self._their_done:
            self._next_bytes += len(data)
        elif self._upgrade_body and not data:
            # llhttp ended the upgrade request with its head; its body is cut short.
            self._stop(self._protocol_error("connection closed in the middle of a message"))
            return
        elif self._upgrade_body and data:
            data = self._feed_upgrade_body(data)
            if not data:
                return
        super().receive_data(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        if len(self._raw_headers) > self._max_header_count:
            raise DownstreamProtocolError("too many request headers", 431)

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert isinstance(parser, httptools.HttpRequestParser)
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise DownstreamProtocolError(f"unsupported HTTP version {version}")
        method = parser.get_method().decode("ascii")
        self._head_size += len(method) + 12
        if self._head_size > self._max_header_bytes:
            raise self._head_too_large()
        headers = self._end_head()
        self.stream_id += 1
        hosts = headers.get_all("host")
        if len(hosts) > 1 or (not hosts and version == "1.1"):
            raise DownstreamProtocolError("a request needs exactly one Host header")
        te = headers.get_all("transfer-encoding")
        if te and [v.strip().lower() for v in te] != ["chunked"]:
            raise DownstreamProtocolError("unsupported Transfer-Encoding")
        length = headers.get("content-length")
        content_length = int(length) if length is not None else None
        tokens = _connection_tokens(headers)
        upgrade = headers.get("upgrade") if "upgrade" in tokens else None
        self._parsing_body = bool(te or content_length)
        if parser.should_upgrade() and self._parsing_body:
            # llhttp leaves an upgrade request's body unparsed; it is served as an ordinary
            # request (with a body, it cannot be a handshake: RFC 9110 7.8).
            if te:
                raise DownstreamProtocolError("an upgrade request with a chunked body")
            self._upgrade_body = content_length or 0
            upgrade = None
        path, authority = self._url.decode("latin-1"), hosts[0] if hosts else ""
        if path[:1] != "/" and path != "*" and method != "CONNECT":
            # Absolute form (RFC 9112 3.2.2): the target's authority wins over Host, and
            # the request goes on in origin form.
            path, authority = _origin_form(path)
            headers.set("host", authority)
        head = RequestHead(
            method=method,
            path=path,
            authority=authority,
            scheme=self._scheme,
            headers=headers,
            http_version=version,
            upgrade=upgrade.strip().lower() if upgrade else None,
        )
        self._events.append(
            RequestHeaders(self.stream_id, head, not self._parsing_body, content_length)
        )

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._parsing_body and not self._upgrade_body:
            self._events.append(EndStream(self.stream_id, self._take_trailers()))

    def _take_trailers(self) -> HeaderMap | None:
        trailers, self._trailers = self._trailers, None
        return HeaderMap.from_raw(trailers) if trailers else None

    def _upgraded(self) -> None:
        if self._upgrade_body:  # with a body, it was an ordinary request: parse on
            self._stopped = False  # (llhttp itself resumes after an upgrade)
            if self._trailing:
                self.receive_data(self.take_trailing_data())

    def _feed_upgrade_body(self, data: bytes) -> bytes:
        """Hands out the body llhttp skipped; returns the bytes after it."""
        body, rest = data[: self._upgrade_body], data[self._upgrade_body :]
        self._upgrade_body -= len(body)
        self._events.append(Data(self.stream_id, body))
        if not self._upgrade_body:
            self._events.append(EndStream(self.stream_id))
        return rest

    @property
    def has_partial_request(self) -> bool:
        """Whether bytes of a next request have arrived (the header timeout then runs)."""
        return self._in_head or bool(self._events)

    def next_event(self) -> ServerEvent:
        if self._their_done:
            return PAUSED if self._events or self._trailing else NEED_DATA
        event = self._pop()
        if event is None:
            return NEED_DATA
        if isinstance(event, RequestHeaders):
            self._begin_exchange(event)
        elif isinstance(event, EndStream):
            self._their_done = True
        elif isinstance(event, Data):
            self._expecting_continue = False
        else:
            assert isinstance(event, ConnectionEnded), event
        return event

    def _begin_exchange(self, event: RequestHeaders) -> None:
        head = event.head
        self._client_version = head.http_version
        # A client that asked to upgrade (or sent CONNECT) may speak another protocol next
        # whatever we answer, and llhttp stops parsing there: such a connection ends after
        # its response.
        self._keep_alive = (
            head.http_version == "1.1"
            and head.method != "CONNECT"
            and "upgrade" not in head.headers
            and "close" not in _connection_tokens(head.headers)
        )
        self._expecting_continue = (
            not event.end_stream
            and head.http_version == "1.1"
            and (head.headers.get("expect") or "").lower() == "100-continue"
        )
        self._their_done = event.end_stream

    def start_next_cycle(self) -> None:
        super().start_next_cycle()
        self._next_bytes = 0

    # -- output --------------------------------------------------------------------------

    @property
    def waiting_for_100_continue(self) -> bool:
        return self._expecting_continue

    def send_100_continue(self) -> bytes:
        self._expecting_continue = False
        return b"HTTP/1.1 100 Continue\r\n\r\n"

    def send_switching_protocols(self, head: ResponseHead) -> bytes:
        """The response that ends HTTP/1.1 on this connection (an upgrade's 101, or a
        CONNECT's 200); what follows is the tunnel's."""
        self._keep_alive = False
        reason = head.reason or _REASONS.get(head.status, "")
        return _encode_head(f"HTTP/1.1 {head.status} {reason}", list(head.headers))

    def send_response_head(self, head: ResponseHead, *, request_method: str) -> bytes:
        self._expecting_continue = False
        status = head.status
        headers = head.headers
        items = list(headers)
        has_body = request_method != "HEAD" and status not in _NO_BODY_STATUSES
        frames_body = status not in _NO_BODY_STATUSES  # a HEAD answer frames as a GET's would
        if frames_body and "content-length" not in headers:
            items = [(n, v) for n, v in items if n != "transfer-encoding"]
            if self._client_version == "1.1":
                items.append(("transfer-encoding", "chunked"))
            else:
                self._keep_alive = False  # HTTP/1.0 has no chunks: the close ends the body
        if "close" in _connection_tokens(headers):
            self._keep_alive = False
        elif not self._keep_alive:
            items = [(n, v) for n, v in items if n != "connection"]
            items.append(("connection", "close"))
        if not has_body:
            self._frame_output(chunked=False, length=0)
        elif "content-length" in headers:
            self._frame_output(chunked=False, length=int(headers.get("content-length") or 0))
        else:  # chunked for HTTP/1.1; for HTTP/1.0, until the connection closes
            self._frame_output(chunked=self._client_version == "1.1", length=None)
        reason = head.reason or _REASONS.get(status, "")
        return _encode_head(f"HTTP/1.1 {status} {reason}", items)

    @property
    def request_complete(self) -> bool:
        return self._their_done

    @property
    def buffered_bytes(self) -> int:
        """Once the request is complete: about how many bytes of later requests have
        arrived (pipelining); at least 1 if any have."""
        if self._events or self._in_head or self._trailing:
            return max(self._next_bytes, 1)
        return self._next_bytes


#: What a reason phrase may not hold (RFC 9112 4: HTAB, SP, VCHAR and obs-text only).
_REASON_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _bytes_past_response() -> UpstreamReset:
    return UpstreamReset("upstream sent bytes past the end of its response")


class ClientCodec(_Codec):
    """The upstream side of an HTTP/1.1 connection (the gateway is the client)."""

    def __init__(self, *, max_header_bytes: int) -> None:
        super().__init__(max_header_bytes)
        self._parser = httptools.HttpResponseParser(self)
        self._reason = b""
        self._request_method = "GET"
        #: Whether the end of the message being parsed is relayed (not for 1xx responses).
        self._relay_end = True
        #: The response to HEAD ended with its head; llhttp, which cannot be told that,
        #: still waits for its body, so the next exchange needs a new parser.
        self._parser_spent = False
        #: The final response of the exchange is complete. An upstream speaks only when
        #: asked, so any byte after this is out of step: were it parsed, it would become
        #: the response to the next client's request (response poisoning).
        self._response_done = False
        #: The request asked to switch protocols: only then may a 101 come.
        self._asked_upgrade = False

    def send_request_head(self, head: RequestHead) -> bytes:
        self.stream_id += 1
        self._request_method = head.method
        headers = head.headers
        self._asked_upgrade = "upgrade" in headers
        if "close" in _connection_tokens(headers):
            self._keep_alive = False
        length = headers.get("content-length")
        if "transfer-encoding" in headers:
            self._frame_output(chunked=True, length=None)
        else:
            self._frame_output(chunked=False, length=int(length) if length is not None else 0)
        return _encode_head(f"{head.method} {head.path} HTTP/1.1", list(headers))

    def _protocol_error(self, reason: str) -> GatewayError:
        return UpstreamReset(f"upstream protocol error: {reason}")

    def _head_too_large(self) -> GatewayError:
        return UpstreamReset("upstream response headers too large")

    def receive_data(self, data: bytes) -> None:
        if self._response_done and data and not self._stopped:
            self._stop(_bytes_past_response())
            return
        super().receive_data(data)

    @property
    def reusable(self) -> bool:
        """Besides both sides done: nothing stopped the parser (an error, bytes past the
        response, an upgrade, the upstream's close)."""
        return super().reusable and not self._stopped

    def on_header(self, name: bytes, value: bytes) -> None:
        if value[-1:] in (b" ", b"\t") and name.lower() == b"transfer-encoding":
            # llhttp does not frame `chunked<HTAB>` as chunked: it would read the chunks
            # as a body that ends at the close.
            raise UpstreamReset("upstream Transfer-Encoding with trailing whitespace")
        super().on_header(name, value)

    def on_status(self, reason: bytes) -> None:
        self._reason += reason
        self._head_size += len(reason) + 15

    def on_message_begin(self) -> None:
        if self._response_done:  # a second response in the same read as the first
            raise _bytes_past_response()
        super().on_message_begin()
        self._reason = b""

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert isinstance(parser, httptools.HttpResponseParser)
        status = parser.get_status_code()
        if not 100 <= status <= 599 or _REASON_CTL.search(self._reason):
            raise UpstreamReset("upstream sent an invalid status line")
        if status == 101 and not (self._asked_upgrade and parser.should_upgrade()):
            raise UpstreamReset("upstream switched protocols unasked")
        headers = self._end_head()
        te = headers.get_all("transfer-encoding")
        if te and [v.lower() for v in te] != ["chunked"]:
            # Any other coding would reach the client decoded of its chunks only, with
            # nothing left to say it is still, say, gzip.
            raise UpstreamReset("unsupported upstream Transfer-Encoding")
        self._relay_end = status >= 200
        if 100 <= status < 200 and status != 101:
            return  # the gateway answered Expect itself; other 1xx carry nothing to relay
        version = parser.get_http_version()
        if version != "1.1" or "close" in _connection_tokens(headers):
            self._keep_alive = False
        head = ResponseHead(status, headers, self._reason.decode("latin-1"))
        self._events.append(ResponseHeaders(self.stream_id, head, end_stream=False))
        if self._request_method == "HEAD":
            self._events.append(EndStream(self.stream_id))
            self._relay_end = False
            self._in_message = False
            self._parser_spent = self._response_done = True
        elif (
            status not in _NO_BODY_STATUSES
            and status != 101
            and "content-length" not in headers
            and "transfer-encoding" not in headers
        ):
            self._body_until_eof = True
            self._keep_alive = False

    def on_body(self, body: bytes) -> None:
        if self._parser_spent:  # a body after the answer to HEAD
            raise _bytes_past_response()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        if self._relay_end:
            self._response_done = True
            self._body_until_eof = False
            trailers, self._trailers = self._trailers, None
            self._events.append(
                EndStream(self.stream_id, HeaderMap.from_raw(trailers) if trailers else None)
            )

    def next_event(self) -> ClientEvent:
        event = self._pop()
        if event is None:
            return NEED_DATA
        if isinstance(event, EndStream):
            self._their_done = True
        else:
            assert not isinstance(event, RequestHeaders)
        return event

    def start_next_cycle(self) -> None:
        super().start_next_cycle()
        self._response_done = False
        if self._parser_spent:
            self._parser_spent = False
            self._parser = httptools.HttpResponseParser(self)
