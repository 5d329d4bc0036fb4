"""Drive the HTTP/1.1 codecs and h11 over the same bytes, and write down what each framed.

A transcript is what a proxy acts on: each message's start line, headers, body bytes and
trailers, in order, and how the byte stream ended (a clean close, an error, or a stop
because the connection cannot carry another exchange). Two parsers agree on a stream when
their transcripts are equal; where they are not, the differential tests decide whether
the difference is one the codec documents.
"""

from collections.abc import Iterable

import attrs
import h11

from gateway.errors import DownstreamProtocolError, UpstreamReset
from gateway.protocol.codec_h1 import Http1Parser
from gateway.protocol.codec_h1_client import ClientCodec
from gateway.protocol.codec_h1_server import ServerCodec
from gateway.protocol.events import (
    NEED_DATA,
    PAUSED,
    ConnectionEnded,
    Data,
    EndStream,
    RequestHeaders,
    ResponseHeaders,
)
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead

#: Far above anything generated: the fuzz compares framing, not the head-size limits.
HEAD_LIMIT = 1 << 20

Fields = tuple[tuple[bytes, bytes], ...]


@attrs.frozen
class Message:
    #: The request's method and target, or the response's status and reason.
    start: tuple[bytes, bytes]
    version: bytes
    headers: Fields
    body: bytes
    trailers: Fields


#: How a transcript ends.
CLOSED = "closed"  # the peer's close, seen between messages
STOPPED = "stopped"  # the last exchange ended the connection (close, upgrade, CONNECT)
ERROR = "error"  # a protocol error
OPEN = "open"  # a message is still incomplete when the bytes run out
#: The codec reported the peer's close as a clean one in the middle of a message.
CUT = "closed in the middle of a message"
#: The connection ended after an exchange that should have kept it open: the parser had
#: stopped at what followed in the same read (a bad, upgrade or CONNECT request); the
#: requests before that were dropped unanswered (fixed; see test_codec_h1_findings.py).
AHEAD = "stopped by an error parsed ahead"
#: The codec's events broke their grammar (a second head before the first message ended).
DISORDER = "events out of order"


@attrs.frozen
class Transcript:
    messages: tuple[Message, ...]
    end: str
    #: The message in progress when the stream ended (its head, if it got that far).
    partial: Message | None = None
    #: Where each message ended in the stream: exact when the bytes came one per read.
    ends: tuple[int, ...] = attrs.field(default=(), eq=False)


def _fields(headers: HeaderMap | None) -> Fields:
    return tuple((n.encode("latin-1"), v.encode("latin-1")) for n, v in headers or ())


def _h11_fields(headers: Iterable[tuple[bytes, bytes]]) -> Fields:
    return tuple((bytes(n), bytes(v)) for n, v in headers)


@attrs.define
class _Recorder:
    messages: list[Message] = attrs.Factory(list)
    start: tuple[bytes, bytes] | None = None
    version: bytes = b""
    headers: Fields = ()
    body: bytearray = attrs.Factory(bytearray)
    end: str | None = None
    ends: list[int] = attrs.Factory(list)
    #: How many bytes were fed so far.
    fed: int = 0

    def begin(self, start: tuple[bytes, bytes], version: bytes, headers: Fields) -> None:
        self.start, self.version, self.headers = start, version, headers
        self.body = bytearray()

    def finish(self, trailers: Fields) -> None:
        assert self.start is not None
        self.messages.append(
            Message(self.start, self.version, self.headers, bytes(self.body), trailers)
        )
        self.ends.append(self.fed)
        self.start = None

    def transcript(self) -> Transcript:
        partial = None
        if self.start is not None:
            partial = Message(self.start, self.version, self.headers, bytes(self.body), ())
        return Transcript(tuple(self.messages), self.end or OPEN, partial, tuple(self.ends))


# -- requests ------------------------------------------------------------------------------


def server_codec(parser: Http1Parser = "llhttp") -> ServerCodec:
    return ServerCodec(
        max_header_bytes=HEAD_LIMIT, max_header_count=10_000, scheme="http", parser=parser
    )


def _keeps_alive(head: RequestHead) -> bool:
    """Whether the request leaves the connection open after its (keep-alive) answer."""
    tokens = {t.strip().lower() for v in head.headers.get_all("connection") for t in v.split(",")}
    return (
        head.http_version == "1.1"
        and head.method != "CONNECT"
        and "upgrade" not in head.headers
        and "close" not in tokens
    )


def codec_requests(
    chunks: Iterable[bytes], *, close: bool = True, parser: Http1Parser = "llhttp"
) -> Transcript:
    """The requests ServerCodec (on `parser`) frames from `chunks` (then the client's
    close), answering each with an empty 200 as the connection manager would."""
    codec = server_codec(parser)
    rec = _Recorder()
    head: RequestHead | None = None

    def pump() -> None:
        nonlocal head
        while rec.end is None:
            try:
                event = codec.next_event()
            except DownstreamProtocolError:
                rec.end = ERROR
                return
            if event is NEED_DATA:
                return
            if event is PAUSED:
                raise AssertionError("paused although the exchange was answered")
            if isinstance(event, RequestHeaders):
                if rec.start is not None:
                    rec.end = DISORDER
                    return
                head = event.head
                start = (head.method.encode("latin-1"), head.path.encode("latin-1"))
                rec.begin(start, head.http_version.encode(), _fields(head.headers))
                if event.end_stream:
                    answer(())
            elif isinstance(event, Data):
                rec.body += event.data
            elif isinstance(event, EndStream):
                answer(_fields(event.trailers))
            else:
                assert isinstance(event, ConnectionEnded), event
                rec.end = CLOSED if rec.start is None else CUT

    def answer(trailers: Fields) -> None:
        assert head is not None
        rec.finish(trailers)
        answer = ResponseHead(200, HeaderMap([("content-length", "0")]))
        codec.send_response_head(answer, request_method=head.method)
        codec.send_end()
        if codec.reusable:
            codec.start_next_cycle()
        else:
            rec.end = AHEAD if _keeps_alive(head) else STOPPED

    for chunk in chunks:
        if rec.end is not None:
            break
        rec.fed += len(chunk)
        codec.receive_data(chunk)
        pump()
    if close and rec.end is None:
        codec.receive_data(b"")
        pump()
    return rec.transcript()


def h11_requests(chunks: Iterable[bytes], *, close: bool = True) -> Transcript:
    """The requests h11 frames from the same bytes, answered the same way."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
    rec = _Recorder()

    def pump() -> None:
        while rec.end is None:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                rec.end = ERROR
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                rec.end = STOPPED  # a switch of protocol was proposed, or a close is due
                return
            if isinstance(event, h11.Request):
                start = (bytes(event.method), bytes(event.target))
                rec.begin(start, bytes(event.http_version), _h11_fields(event.headers))
            elif isinstance(event, h11.Data):
                rec.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                rec.finish(_h11_fields(event.headers))
                answer()
            else:
                assert isinstance(event, h11.ConnectionClosed), event
                rec.end = CLOSED

    def answer() -> None:
        if conn.their_state is h11.MIGHT_SWITCH_PROTOCOL:
            rec.end = STOPPED  # Upgrade or CONNECT: see the allowances
            return
        conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
        conn.send(h11.EndOfMessage())
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            rec.end = STOPPED

    for chunk in chunks:
        if rec.end is not None:
            break
        conn.receive_data(chunk)
        pump()
    if close and rec.end is None:
        conn.receive_data(b"")
        pump()
    return rec.transcript()


# -- responses -----------------------------------------------------------------------------


def client_codec(parser: Http1Parser = "llhttp") -> ClientCodec:
    return ClientCodec(max_header_bytes=HEAD_LIMIT, parser=parser)


def _request_fields(upgrade: bool) -> list[tuple[str, str]]:
    """The request's headers: a Host, and when it asks to upgrade, what asks."""
    asks = [("connection", "upgrade"), ("upgrade", "websocket")] if upgrade else []
    return [("host", "up"), *asks]


def codec_response(
    method: str,
    chunks: Iterable[bytes],
    *,
    upgrade: bool = False,
    parser: Http1Parser = "llhttp",
) -> Transcript:
    """The response ClientCodec (on `parser`) frames from `chunks` (then the upstream's
    close) for one `method` request (asking to upgrade, if `upgrade`); 1xx interim
    responses are not relayed, so not recorded."""
    codec = client_codec(parser)
    head = RequestHead(method, "/", "up", "http", HeaderMap(_request_fields(upgrade)))
    codec.send_request_head(head)
    codec.send_end()
    rec = _Recorder()

    def pump() -> None:
        while rec.end is None:
            try:
                event = codec.next_event()
            except UpstreamReset:
                rec.end = ERROR
                return
            if event is NEED_DATA:
                return
            if isinstance(event, ResponseHeaders):
                if rec.start is not None:
                    rec.end = DISORDER
                    return
                head = event.head
                start = (str(head.status).encode(), head.reason.encode("latin-1"))
                rec.begin(start, b"", _fields(head.headers))
                if head.status == 101:  # the tunnel's bytes follow, not a body
                    rec.finish(())
                    rec.end = STOPPED
            elif isinstance(event, Data):
                rec.body += event.data
            elif isinstance(event, EndStream):
                rec.finish(_fields(event.trailers))
                rec.end = STOPPED  # one exchange: what follows is not a response
            else:
                assert isinstance(event, ConnectionEnded), event
                rec.end = CLOSED if rec.start is None else CUT

    for chunk in [*chunks, b""]:
        rec.fed += len(chunk)
        codec.receive_data(chunk)
        pump()
        if rec.end is not None:
            break
    return rec.transcript()


def h11_response(method: str, chunks: Iterable[bytes], *, upgrade: bool = False) -> Transcript:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
    conn.send(h11.Request(method=method, target="/", headers=_request_fields(upgrade)))
    conn.send(h11.EndOfMessage())
    rec = _Recorder()

    def pump() -> None:
        while rec.end is None:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                rec.end = ERROR
                return
            if event is h11.NEED_DATA:
                return
            if event is h11.PAUSED:
                rec.end = STOPPED
                return
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    start = (b"101", bytes(event.reason))
                    rec.begin(start, b"", _h11_fields(event.headers))
                    rec.finish(())
                    rec.end = STOPPED
            elif isinstance(event, h11.Response):
                start = (str(event.status_code).encode(), bytes(event.reason))
                rec.begin(start, b"", _h11_fields(event.headers))
            elif isinstance(event, h11.Data):
                rec.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                rec.finish(_h11_fields(event.headers))
                rec.end = STOPPED
            else:
                assert isinstance(event, h11.ConnectionClosed), event
                rec.end = CLOSED

    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        pump()
        if rec.end is not None:
            break
    return rec.transcript()
