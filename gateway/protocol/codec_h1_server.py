"""The downstream side of an HTTP/1.1 connection (the gateway is the server), on either
parser: see codec_h1.py."""

from gateway.errors import DownstreamProtocolError, GatewayError
from gateway.protocol.codec_h1 import (
    NO_BODY_STATUSES,
    REASONS,
    Http1Codec,
    Http1Parser,
    RequestParser,
    ServerEvent,
    connection_tokens,
    encode_head,
    origin_form,
    request_parser,
)
from gateway.protocol.events import (
    NEED_DATA,
    PAUSED,
    ConnectionEnded,
    Data,
    EndStream,
    RequestHeaders,
)
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead


class ServerCodec(Http1Codec):
    """The downstream side of an HTTP/1.1 connection (the gateway is the server)."""

    _parser: RequestParser

    def __init__(
        self,
        *,
        max_header_bytes: int,
        max_header_count: int,
        scheme: str,
        parser: Http1Parser = "llhttp",
    ) -> None:
        super().__init__(max_header_bytes)
        self._max_header_count = max_header_count
        self._scheme = scheme
        self._parser = request_parser(parser, self, max_header_bytes)
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
        tokens = connection_tokens(headers)
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
            path, authority = origin_form(path)
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
            and "close" not in connection_tokens(head.headers)
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
        reason = head.reason or REASONS.get(head.status, "")
        return encode_head(f"HTTP/1.1 {head.status} {reason}", list(head.headers))

    def send_response_head(self, head: ResponseHead, *, request_method: str) -> bytes:
        self._expecting_continue = False
        status = head.status
        headers = head.headers
        items = list(headers)
        has_body = request_method != "HEAD" and status not in NO_BODY_STATUSES
        frames_body = status not in NO_BODY_STATUSES  # a HEAD answer frames as a GET's would
        if frames_body and "content-length" not in headers:
            items = [(n, v) for n, v in items if n != "transfer-encoding"]
            if self._client_version == "1.1":
                items.append(("transfer-encoding", "chunked"))
            else:
                self._keep_alive = False  # HTTP/1.0 has no chunks: the close ends the body
        if "close" in connection_tokens(headers):
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
        reason = head.reason or REASONS.get(status, "")
        return encode_head(f"HTTP/1.1 {status} {reason}", items)

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
