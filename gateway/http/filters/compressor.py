"""`compressor`: gzip for responses, streamed chunk by chunk (Envoy's compressor).

```toml
[http_filters.gzip]
type = "compressor"
content_types = ["text/html", "text/plain", "application/json"]
min_content_length = 1024
level = 6
```

A response is compressed when the client accepts gzip, its content type is listed, it is
not already encoded, and its declared length (if any) reaches `min_content_length`. The
body is compressed as it streams: each chunk goes out as soon as zlib yields output, with
a sync flush so a slow stream (server-sent events) is not held back; nothing waits for the
whole body. Content-Length is dropped (the length changes), `vary: accept-encoding` added.
"""

import zlib

import attrs

from gateway.config.model import UINT32_MAX, between
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.observability.stats import Counter
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import LocalReply, RequestHead, ResponseHead


@attrs.frozen
class CompressorConfig:
    content_types: list[str] = attrs.Factory(
        lambda: [
            "text/html",
            "text/plain",
            "text/css",
            "application/json",
            "application/javascript",
        ]
    )
    min_content_length: int = attrs.field(default=30, validator=between(0, UINT32_MAX))
    level: int = attrs.field(default=6, validator=between(1, 9))


def _accepts_gzip(value: str | None) -> bool:
    for part in (value or "").split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "*") and params.replace(" ", "") not in (
            "q=0",
            "q=0.0",
        ):
            return True
    return False


class CompressorFilter(HttpFilter):
    def __init__(self, config: CompressorConfig, compressed: Counter, skipped: Counter) -> None:
        self._config = config
        self._compressed = compressed
        self._skipped = skipped
        self._accepts = False
        self._zlib: zlib._Compress | None = None

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        self._accepts = _accepts_gzip(request.headers.get("accept-encoding"))
        return None

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        headers = response.headers
        content_type = (headers.get("content-type") or "").partition(";")[0].strip().lower()
        length = headers.get("content-length")
        if (
            end_stream
            or not self._accepts
            or content_type not in self._config.content_types
            or "content-encoding" in headers
            or (
                length is not None
                and length.isdigit()
                and int(length) < self._config.min_content_length
            )
        ):
            self._skipped.inc()
            return
        self._compressed.inc()
        self._zlib = zlib.compressobj(self._config.level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        headers.remove("content-length")
        headers.set("content-encoding", "gzip")
        headers.add("vary", "accept-encoding")

    async def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        if self._zlib is None:
            return data
        out = self._zlib.compress(data)
        return out + self._zlib.flush(zlib.Z_FINISH if end_stream else zlib.Z_SYNC_FLUSH)


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, CompressorConfig)
    compressed = context.scope.counter("compressed")
    skipped = context.scope.counter("not_compressed")

    def factory(info: StreamInfo) -> HttpFilter:
        return CompressorFilter(config, compressed, skipped)

    return factory


FILTER_TYPE = HttpFilterType(
    "compressor",
    CompressorConfig,
    create_factory,
    stats={
        "compressed": "responses gzipped",
        "not_compressed": "responses passed as they were",
    },
)
