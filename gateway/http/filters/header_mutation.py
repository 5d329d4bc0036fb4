"""`header_mutation`: adds and removes request and response headers.

```toml
[http_filters.add_headers]
type = "header_mutation"
request_headers_to_add = { "x-gateway" = "1" }
response_headers_to_remove = ["server"]
```
"""

from gateway.config.model import HeaderMutations
from gateway.http.filter import FilterContext, HttpFilter, HttpFilterFactory, HttpFilterType
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import LocalReply, RequestHead, ResponseHead
from gateway.router.route_table import mutate_request, mutate_response


class HeaderMutationFilter(HttpFilter):
    def __init__(self, config: HeaderMutations) -> None:
        self._config = config

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        mutate_request(request.headers, self._config)
        return None

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        mutate_response(response.headers, self._config)


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, HeaderMutations)
    # The filter keeps no per-stream state, so every stream can share one instance.
    shared = HeaderMutationFilter(config)

    def factory(info: StreamInfo) -> HttpFilter:
        return shared

    return factory


FILTER_TYPE = HttpFilterType("header_mutation", HeaderMutations, create_factory)
