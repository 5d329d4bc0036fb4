"""`buffer`: holds a whole request body (up to a limit) before it goes upstream.

```toml
[http_filters.buffer]
type = "buffer"
max_request_bytes = 1048576
```

The upstream then receives the body in one piece, after the client finished sending it
(Envoy's buffer filter). A declared Content-Length over the limit is refused at once with
413; a chunked body is refused with 413 as soon as it passes the limit. Memory per request
is bounded by the limit.
"""

import attrs

from gateway.config.model import UINT32_MAX, between
from gateway.errors import GatewayError
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.observability.stats import Counter
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import LocalReply, RequestHead


@attrs.frozen
class BufferConfig:
    max_request_bytes: int = attrs.field(validator=between(1, UINT32_MAX))


class RequestTooLarge(GatewayError):
    status = 413
    response_flag = "-"
    body = "request body too large"


class BufferFilter(HttpFilter):
    def __init__(self, config: BufferConfig, too_large: Counter) -> None:
        self._limit = config.max_request_bytes
        self._too_large = too_large
        self._held = bytearray()

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._limit:
            self._too_large.inc()
            return LocalReply(413, RequestTooLarge.body)
        return None

    async def decode_data(self, data: bytes, end_stream: bool) -> bytes:
        self._held += data
        if len(self._held) > self._limit:
            self._too_large.inc()
            raise RequestTooLarge()
        if not end_stream:
            return b""
        whole, self._held = bytes(self._held), bytearray()
        return whole


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, BufferConfig)
    too_large = context.scope.counter("rq_too_large")

    def factory(info: StreamInfo) -> HttpFilter:
        return BufferFilter(config, too_large)

    return factory


FILTER_TYPE = HttpFilterType(
    "buffer",
    BufferConfig,
    create_factory,
    stats={
        "rq_too_large": "requests refused with 413 (over max_request_bytes)",
    },
)
