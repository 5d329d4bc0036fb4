"""`grpc_web`: the gRPC-Web bridge (Envoy's envoy.filters.http.grpc_web).

```toml
[http_filters.grpc_web]
type = "grpc_web"
```

A request with a gRPC-Web content type (`application/grpc-web`, `application/grpc-web-text`,
either with a `+proto`-style suffix) goes upstream as plain gRPC: `application/grpc` with
the same suffix, `te: trailers`, no `content-length` (it counted the client's body, which
`-text` decoding changes), and `grpc-accept-encoding: identity` unless the client named
encodings (a browser library cannot decompress messages). A `-text` body is base64-decoded
as it streams. Other requests pass untouched.

The response gets the gRPC-Web content type back (`-text` if the client sent a `-text`
body or accepts one, as Envoy decides), with the client's suffix; the trailers become the
body's last frame; a `-text` body is base64-encoded as it streams. A trailers-only response
(grpc-status in the head) passes as headers, which gRPC-Web clients read. A response that
is not gRPC (an upstream that answered 503 in plain HTTP) keeps its status and gets a
`grpc-status` mapped from it in the head, its body dropped: as Envoy does, except that
Envoy buffers up to 16 KiB of that body for `grpc-message`, which needs a head held back
until the body ends.
"""

import http

import attrs

from gateway.errors import GatewayError
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.observability.stats import Counter, create_stats
from gateway.observability.stream_info import StreamInfo
from gateway.protocol import grpc, grpc_web
from gateway.protocol.headers import HeaderMap, LocalReply, RequestHead, ResponseHead


@attrs.frozen
class GrpcWebConfig:
    """No keys, as Envoy's GrpcWeb message has none."""


@attrs.frozen
class GrpcWebStats:
    """`http.LISTENER.NAME.*`: calls bridged and how they ended (Envoy counts the same per
    cluster and method, `cluster.NAME.grpc-web.SERVICE.METHOD.*`; per method is what the
    `grpc_stats` filter is for, with a bound on the methods it tracks)."""

    total: Counter
    success: Counter
    failure: Counter
    #: `-text` bodies that were not base64 (Envoy's grpc_base_64_decode_failed).
    base64_decode_failed: Counter


class Base64DecodeFailed(GatewayError):
    """A `-text` request body that is not base64. It ends the call before or while it goes
    upstream; the client reads it as INTERNAL, as Envoy's 400 maps."""

    status = 400
    body = "Bad gRPC-web request, invalid base64 data."


class GrpcWebFilter(HttpFilter):
    def __init__(self, stats: GrpcWebStats) -> None:
        self._stats = stats
        #: The response's content type; None for a request that is not gRPC-Web.
        self._content_type: str | None = None
        self._decoder: grpc_web.Base64Decoder | None = None
        self._encoder: grpc_web.Base64Encoder | None = None
        self._cursor: grpc_web.MessageCursor | None = None
        #: The response is not gRPC: its status went into the head, its body is dropped.
        self._non_grpc = False

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        headers = request.headers
        parsed = grpc_web.parse_content_type(headers.get("content-type"))
        if parsed is None:
            return None
        text, suffix = parsed
        self._stats.total.inc()
        if text:
            self._decoder = grpc_web.Base64Decoder()
        if text or grpc_web.accepts_text(headers.get("accept")):
            self._encoder = grpc_web.Base64Encoder()
            self._cursor = grpc_web.MessageCursor()
        self._content_type = grpc_web.content_type(self._encoder is not None, suffix)
        headers.set("content-type", "application/grpc" + suffix)
        headers.remove("content-length")
        headers.set("te", "trailers")
        if "grpc-accept-encoding" not in headers:
            headers.set("grpc-accept-encoding", "identity")
        return None

    async def decode_data(self, data: bytes, end_stream: bool) -> bytes:
        decoder = self._decoder
        if decoder is None:
            return data
        try:
            out = decoder.decode(data) if data else b""
            if end_stream:
                decoder.finish()
        except ValueError:
            # The call ends here: the router stops reading the body and answers.
            self._stats.base64_decode_failed.inc()
            raise Base64DecodeFailed() from None
        return out

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        if self._content_type is None:
            return
        headers = response.headers
        status = headers.get("grpc-status")
        if status is None and (end_stream or not _is_grpc_response(response)):
            # Not gRPC (an upstream's plain error page, say): put a status the client
            # reads in the head, and send nothing of the body.
            self._non_grpc = True
            code = (
                grpc.Status.UNKNOWN
                if response.status == 200
                else grpc.status_for_http(response.status)
            )
            status = str(int(code))
            headers.set("grpc-status", status)
            headers.set("grpc-message", _describe(response.status))
        headers.set("content-type", self._content_type)
        headers.remove("content-length")
        if end_stream or self._non_grpc:  # else the status comes in the trailers
            self._count(status)

    async def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        if self._non_grpc:
            return b""
        encoder = self._encoder
        if encoder is None or (not data and not end_stream):
            return data
        assert self._cursor is not None
        return encoder.encode(data, end_stream or self._cursor.advance(data))

    async def encode_trailers(self, trailers: HeaderMap) -> bytes | None:
        if self._content_type is None:
            return None
        frame = b""
        if not self._non_grpc:
            self._count(trailers.get("grpc-status"))
            frame = grpc_web.trailer_frame(trailers)
            if self._encoder is not None:
                frame = self._encoder.encode(frame, True)
        # Emptied: the body ends with the frame (browsers cannot read HTTP trailers).
        trailers.remove_names({name for name, _ in trailers})
        return frame

    def _count(self, status: str | None) -> None:
        (self._stats.success if status == "0" else self._stats.failure).inc()


def _is_grpc_response(response: ResponseHead) -> bool:
    """A response that carries gRPC messages: 200 with a gRPC content type (an upstream
    that speaks gRPC-Web itself included)."""
    content_type = response.headers.get("content-type") or ""
    return response.status == 200 and content_type.startswith("application/grpc")


def _describe(status: int) -> str:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"non-gRPC response: HTTP {status} {phrase}".rstrip()


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, GrpcWebConfig)
    stats = create_stats(GrpcWebStats, context.scope)

    def factory(info: StreamInfo) -> HttpFilter:
        return GrpcWebFilter(stats)

    return factory


FILTER_TYPE = HttpFilterType(
    "grpc_web",
    GrpcWebConfig,
    create_factory,
    stats={
        "total": "gRPC-Web calls bridged",
        "success": "bridged calls that ended with grpc-status 0",
        "failure": "bridged calls that ended with another status",
        "base64_decode_failed": "grpc-web-text bodies that were not base64",
    },
)
