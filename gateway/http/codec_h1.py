"""HTTP/1.1 codecs over h11: bytes in, gateway events out; heads in, bytes out. No I/O.

h11 does the parsing and framing. This module adds what a proxy needs on top of a
server library, because a proxy sits between two parsers that may disagree:

* Request smuggling defences. h11 is lenient in places where a lenient front end lets a
  request through that the back end frames differently, so the server codec rejects:
  bare LF line endings and obs-fold in the head (h11 accepts both), Content-Length together
  with Transfer-Encoding (h11 lets chunked win), any Transfer-Encoding but `chunked`, and
  chunk sizes no real body has. Together with h11's own checks (conflicting Content-Length,
  several Host headers, NUL/CR in headers) every ambiguous framing ends in 400 + close.
  Upstream bytes are always re-framed by h11 from the parsed head, never copied raw.
* Limits: the request head size (431 via h11's max_incomplete_event_size) and header count.
* One event vocabulary (gateway.http.events), so the HCM never sees h11 types.
"""

import http
import re

import h11

from gateway.errors import DownstreamProtocolError, UpstreamReset
from gateway.http.events import (
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
from gateway.http.headers import HeaderMap, RequestHead, ResponseHead

#: A bare LF (not preceded by CR), or a CRLF followed by whitespace (obs-fold).
_BAD_HEAD_BYTES = re.compile(rb"(?<!\r)\n|\r\n[ \t]")
#: Larger chunks than this are refused: a client never needs one, and a parser behind us
#: that keeps sizes in a signed 64-bit int could wrap around on them.
MAX_CHUNK_SIZE = 2**40
_REASONS = {s.value: s.phrase for s in http.HTTPStatus}

# h11 validates every header of every event we send, with two regexes per header (its
# field-name and field-value rules). Our header maps come from h11's own parser or from the
# gateway's code, so the same rules are checked here in two regex calls per head, over the
# names and the values joined by "\n" (which neither may contain), and h11 is told the
# headers are clean (`_parsed=True`: it still lower-cases names and checks Content-Length
# and Transfer-Encoding). Anything else, including non-ASCII, takes h11's full path, so
# errors are h11's own as before.
_TOKEN = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+"
_VCHAR = r"[^\x00\s\x80-\U0010ffff]"  # h11's field-vchar, ASCII only
_VALUE = rf"(?:{_VCHAR}+(?:[ \t]+{_VCHAR}+)*)?"
_NAMES_RE = re.compile(rf"{_TOKEN}(?:\n{_TOKEN})*", re.ASCII)
_VALUES_RE = re.compile(rf"{_VALUE}(?:\n{_VALUE})*", re.ASCII)


def _clean_wire_headers(headers: HeaderMap) -> list[tuple[bytes, bytes]] | None:
    """The headers as h11 wants them if they pass h11's rules; None to let h11 check."""
    items = list(headers)
    if not items:
        return []
    if _NAMES_RE.fullmatch("\n".join([n for n, _ in items])) and _VALUES_RE.fullmatch(
        "\n".join([v for _, v in items])
    ):
        return [(n.encode(), v.encode()) for n, v in items]
    return None


ServerEvent = RequestHeaders | Data | EndStream | ConnectionEnded | NeedData | Paused
ClientEvent = ResponseHeaders | Data | EndStream | ConnectionEnded | NeedData


def _content_length(headers: HeaderMap) -> int | None:
    value = headers.get("content-length")
    return int(value) if value is not None else None


def _trailers(event: h11.EndOfMessage) -> HeaderMap | None:
    return HeaderMap.from_raw(event.headers) if event.headers else None


def _is_chunked(headers: HeaderMap) -> bool:
    return (headers.get("transfer-encoding") or "").lower() == "chunked"


class _Codec:
    """What both roles share: body framing out, failure marking, and connection reuse."""

    def __init__(self, role: type[h11.CLIENT] | type[h11.SERVER], max_header_bytes: int) -> None:
        self._conn = h11.Connection(role, max_incomplete_event_size=max_header_bytes)
        self._max_header_bytes = max_header_bytes
        self.stream_id = 0
        #: Whether the message we are sending is chunked (so it can carry trailers).
        self._chunked = False
        self.trailers_dropped = 0
        # Bytes of the head being received, kept for the checks h11 does not do.
        self._head = bytearray()
        self._in_head = True

    def receive_data(self, data: bytes) -> None:
        """Feeds bytes from the socket; b"" means the peer closed its side."""
        if self._in_head and data:
            self._head += data
            self._check_head()
        self._conn.receive_data(data)

    def _head_bytes(self) -> bytearray:
        """The head received so far, without the blank line that ends it."""
        end = self._head.find(b"\r\n\r\n")
        head = self._head if end < 0 else self._head[: end + 2]
        # h11 only enforces its limit on an incomplete head; one that arrives whole in a
        # single read must be measured here.
        if len(head) > self._max_header_bytes:
            self._head_too_large()
        return head

    def _check_head(self) -> None:
        self._head_bytes()

    def _head_too_large(self) -> None:
        raise NotImplementedError

    def _head_done(self) -> None:
        self._in_head = False
        self._head.clear()

    def send_data(self, data: bytes) -> bytes:
        return self._send(h11.Data(data=data))

    def send_end(self, trailers: HeaderMap | None = None) -> bytes:
        """Ends the body; trailers go out only where the framing can carry them (chunked)."""
        if trailers and self._chunked:
            return self._send(h11.EndOfMessage(headers=list(trailers)))
        if trailers:
            self.trailers_dropped += 1
        return self._send(h11.EndOfMessage())

    def _send(self, event: h11.Event) -> bytes:
        data = self._conn.send(event)
        assert data is not None
        return data

    def send_failed(self) -> None:
        """Tells h11 that a write did not complete, so the connection is never reused."""
        self._conn.send_failed()

    @property
    def reusable(self) -> bool:
        """Both sides finished cleanly and keep-alive was not refused by either."""
        return self._conn.our_state is h11.DONE and self._conn.their_state is h11.DONE

    def take_trailing_data(self) -> bytes:
        """After a protocol switch: the bytes h11 read past the handshake."""
        return bytes(self._conn.trailing_data[0])

    def start_next_cycle(self) -> None:
        self._conn.start_next_cycle()
        self._in_head = True
        # Bytes already buffered (pipelining) belong to the next head and get the same checks.
        self._head = bytearray(self._conn.trailing_data[0])
        self._check_head()


class ServerCodec(_Codec):
    """The downstream side of an HTTP/1.1 connection (the gateway is the server)."""

    def __init__(self, *, max_header_bytes: int, max_header_count: int, scheme: str) -> None:
        super().__init__(h11.SERVER, max_header_bytes)
        self._max_header_count = max_header_count
        self._scheme = scheme

    # -- input ---------------------------------------------------------------------------

    def _check_head(self) -> None:
        if _BAD_HEAD_BYTES.search(self._head_bytes()):
            raise DownstreamProtocolError("bare LF or obs-fold in request head")

    def _head_too_large(self) -> None:
        raise DownstreamProtocolError("request headers too large", 431)

    @property
    def has_partial_request(self) -> bool:
        """Whether bytes of a next request have arrived (the header timeout then runs)."""
        return bool(self._head)

    def next_event(self) -> ServerEvent:
        try:
            event = self._conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = 431 if exc.error_status_hint == 431 else 400
            raise DownstreamProtocolError(str(exc), status) from None
        if event is h11.NEED_DATA:
            return NEED_DATA
        if event is h11.PAUSED:
            return PAUSED
        if isinstance(event, h11.Data):
            if event.chunk_start and self._chunk_remaining() + len(event.data) > MAX_CHUNK_SIZE:
                raise DownstreamProtocolError("chunk size too large")
            return Data(self.stream_id, event.data)
        if isinstance(event, h11.EndOfMessage):
            return EndStream(self.stream_id, _trailers(event))
        if isinstance(event, h11.Request):
            return self._request(event)
        assert isinstance(event, h11.ConnectionClosed), event
        return ConnectionEnded()

    def _chunk_remaining(self) -> int:
        # h11 has no public view of the declared chunk size; its chunked reader keeps it here.
        return int(getattr(self._conn._reader, "_bytes_in_chunk", 0))

    def _request(self, event: h11.Request) -> RequestHeaders:
        self._head_done()
        self.stream_id += 1
        headers = HeaderMap.from_raw(event.headers)
        if len(headers) > self._max_header_count:
            raise DownstreamProtocolError("too many request headers", 431)
        has_te = "transfer-encoding" in headers
        if has_te and "content-length" in headers:
            raise DownstreamProtocolError("both Content-Length and Transfer-Encoding")
        if has_te and [v.strip().lower() for v in headers.get_all("transfer-encoding")] != [
            "chunked"
        ]:
            raise DownstreamProtocolError("unsupported Transfer-Encoding")
        content_length = _content_length(headers)
        tokens = {t.strip().lower() for v in headers.get_all("connection") for t in v.split(",")}
        upgrade = headers.get("upgrade") if "upgrade" in tokens else None
        head = RequestHead(
            method=event.method.decode("ascii"),
            path=event.target.decode("latin-1"),
            authority=headers.get("host") or "",
            scheme=self._scheme,
            headers=headers,
            http_version=event.http_version.decode("ascii"),
            upgrade=upgrade.strip().lower() if upgrade else None,
        )
        end_stream = not has_te and not content_length
        if end_stream:
            # Consume h11's EndOfMessage now, so the request counts as complete at once.
            assert isinstance(self._conn.next_event(), h11.EndOfMessage)
        return RequestHeaders(self.stream_id, head, end_stream, content_length)

    # -- output --------------------------------------------------------------------------

    @property
    def waiting_for_100_continue(self) -> bool:
        return self._conn.they_are_waiting_for_100_continue

    def send_100_continue(self) -> bytes:
        return self._send(h11.InformationalResponse(status_code=100, headers=[]))

    def send_switching_protocols(self, head: ResponseHead) -> bytes:
        """The 101 that ends HTTP/1.1 on this connection; what follows is the tunnel's."""
        return self._send(
            h11.InformationalResponse(
                status_code=101, headers=list(head.headers), reason=b"Switching Protocols"
            )
        )

    def send_response_head(self, head: ResponseHead, *, request_method: str) -> bytes:
        reason = head.reason or _REASONS.get(head.status, "")
        # h11 chunks a response with no Content-Length for an HTTP/1.1 client, if it has a body.
        self._chunked = (
            "content-length" not in head.headers
            and self._conn.their_http_version == b"1.1"
            and request_method != "HEAD"
            and head.status not in (204, 304)
        )
        wire = _clean_wire_headers(head.headers)
        if wire is not None and reason.isascii():
            return self._send(
                h11.Response(
                    status_code=head.status, headers=wire, reason=reason.encode(), _parsed=True
                )
            )
        return self._send(
            h11.Response(status_code=head.status, headers=list(head.headers), reason=reason)
        )

    @property
    def request_complete(self) -> bool:
        return self._conn.their_state is h11.DONE

    @property
    def buffered_bytes(self) -> int:
        """Bytes received but not yet parsed (pipelined requests)."""
        return len(self._conn.trailing_data[0])


class ClientCodec(_Codec):
    """The upstream side of an HTTP/1.1 connection (the gateway is the client)."""

    def __init__(self, *, max_header_bytes: int) -> None:
        super().__init__(h11.CLIENT, max_header_bytes)

    def send_request_head(self, head: RequestHead) -> bytes:
        self.stream_id += 1
        target = head.path.encode("latin-1")
        self._chunked = _is_chunked(head.headers)
        wire = _clean_wire_headers(head.headers)
        if wire is not None and head.method.isascii():
            return self._send(
                h11.Request(method=head.method.encode(), target=target, headers=wire, _parsed=True)
            )
        return self._send(
            h11.Request(method=head.method, target=target, headers=list(head.headers))
        )

    def _head_too_large(self) -> None:
        raise UpstreamReset("upstream response headers too large")

    def next_event(self) -> ClientEvent:
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise UpstreamReset(f"upstream protocol error: {exc}") from None
            if event is h11.NEED_DATA:
                return NEED_DATA
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:  # the upstream accepted an upgrade
                    self._head_done()
                    head = ResponseHead(101, HeaderMap.from_raw(event.headers))
                    return ResponseHeaders(self.stream_id, head, end_stream=False)
                continue  # other 1xx: the gateway answered Expect itself
            if isinstance(event, h11.Response):
                self._head_done()
                headers = HeaderMap.from_raw(event.headers)
                head = ResponseHead(event.status_code, headers, event.reason.decode("latin-1"))
                return ResponseHeaders(self.stream_id, head, end_stream=False)
            if isinstance(event, h11.Data):
                return Data(self.stream_id, event.data)
            if isinstance(event, h11.EndOfMessage):
                return EndStream(self.stream_id, _trailers(event))
            if isinstance(event, h11.ConnectionClosed):
                return ConnectionEnded()
            raise UpstreamReset(f"unexpected upstream event {event!r}")  # pragma: no cover
