"""The upstream side of an HTTP/1.1 connection (the gateway is the client), on either
parser: see codec_h1.py."""

import re

from gateway.errors import GatewayError, UpstreamReset
from gateway.protocol.codec_h1 import (
    NO_BODY_STATUSES,
    ClientEvent,
    Http1Codec,
    Http1Parser,
    ResponseParser,
    connection_tokens,
    encode_head,
    response_parser,
)
from gateway.protocol.events import NEED_DATA, EndStream, RequestHeaders, ResponseHeaders
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead

#: What a reason phrase may not hold (RFC 9112 4: HTAB, SP, VCHAR and obs-text only).
_REASON_CTL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _bytes_past_response() -> UpstreamReset:
    return UpstreamReset("upstream sent bytes past the end of its response")


class ClientCodec(Http1Codec):
    """The upstream side of an HTTP/1.1 connection (the gateway is the client)."""

    _parser: ResponseParser

    def __init__(self, *, max_header_bytes: int, parser: Http1Parser = "llhttp") -> None:
        super().__init__(max_header_bytes)
        self._parser_name: Http1Parser = parser
        self._parser = response_parser(parser, self, max_header_bytes)
        self._reason = b""
        self._request_method = "GET"
        #: Whether the end of the message being parsed is relayed (not for 1xx responses).
        self._relay_end = True
        #: The response to HEAD ended with its head; the parser, which is not told that
        #: (llhttp cannot be), still waits for its body, so the next exchange needs a new one.
        self._parser_spent = False
        #: The final response of the exchange is complete. An upstream speaks only when
        #: asked, so any byte after this is out of step: were it parsed, it would become
        #: the response to the next client's request (response poisoning).
        self._response_done = False
        #: The request asked to switch protocols: only then may a 101 come.
        self._asked_upgrade = False
        #: A chunk's size line was read and no data since: the last chunk, if an error
        #: comes now (any byte after a non-empty chunk's size line is its data).
        self._last_chunk = False

    def send_request_head(self, head: RequestHead) -> bytes:
        self.stream_id += 1
        self._request_method = head.method
        headers = head.headers
        self._asked_upgrade = "upgrade" in headers
        if "close" in connection_tokens(headers):
            self._keep_alive = False
        length = headers.get("content-length")
        if "transfer-encoding" in headers:
            self._frame_output(chunked=True, length=None)
        else:
            self._frame_output(chunked=False, length=int(length) if length is not None else 0)
        return encode_head(f"{head.method} {head.path} HTTP/1.1", list(headers))

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
        if version != "1.1" or "close" in connection_tokens(headers):
            self._keep_alive = False
        head = ResponseHead(status, headers, self._reason.decode("latin-1"))
        self._events.append(ResponseHeaders(self.stream_id, head, end_stream=False))
        if self._request_method == "HEAD":
            self._events.append(EndStream(self.stream_id))
            self._relay_end = False
            self._in_message = False
            self._parser_spent = self._response_done = True
        elif (
            status not in NO_BODY_STATUSES
            and status != 101
            and "content-length" not in headers
            and "transfer-encoding" not in headers
        ):
            self._body_until_eof = True
            self._keep_alive = False

    def on_chunk_header(self) -> None:
        self._last_chunk = True

    def on_body(self, body: bytes) -> None:
        if self._parser_spent:  # a body after the answer to HEAD
            raise _bytes_past_response()
        self._last_chunk = False
        super().on_body(body)

    def _stop(self, error: BaseException) -> None:
        if self._last_chunk:
            # The body came whole; only the last chunk's trailer section is broken (a
            # framing field in it, which llhttp refuses as a message error). The body is
            # relayed and ended without trailers; the error stays queued behind the end,
            # so the connection is counted as a protocol error and closed, never reused.
            self._last_chunk = False
            self._trailers = None
            self.on_message_complete()
        super()._stop(error)

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
            self._parser = response_parser(self._parser_name, self, self._max_header_bytes)
