"""`header_mutation`: adds and removes request and response headers.

```toml
[http_filters.add_headers]
type = "header_mutation"
request_headers_to_add = { "x-gateway" = "1" }
response_headers_to_remove = ["server"]
```
"""

import attrs

from gateway.http.filter import HttpFilter, HttpFilterFactory, HttpFilterType, LocalReply
from gateway.http.headers import RequestHead, ResponseHead
from gateway.http.stream_info import StreamInfo


@attrs.frozen
class HeaderMutationConfig:
    request_headers_to_add: dict[str, str] = attrs.Factory(dict)
    request_headers_to_remove: list[str] = attrs.Factory(list)
    response_headers_to_add: dict[str, str] = attrs.Factory(dict)
    response_headers_to_remove: list[str] = attrs.Factory(list)


class HeaderMutationFilter(HttpFilter):
    def __init__(self, config: HeaderMutationConfig) -> None:
        self._config = config

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        c = self._config
        request.headers.apply(c.request_headers_to_add, c.request_headers_to_remove)
        return None

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        c = self._config
        response.headers.apply(c.response_headers_to_add, c.response_headers_to_remove)


def create_factory(config: object) -> HttpFilterFactory:
    assert isinstance(config, HeaderMutationConfig)
    # The filter keeps no per-stream state, so every stream can share one instance.
    shared = HeaderMutationFilter(config)

    def factory(info: StreamInfo) -> HttpFilter:
        return shared

    return factory


FILTER_TYPE = HttpFilterType("header_mutation", HeaderMutationConfig, create_factory)
