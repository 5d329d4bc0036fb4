"""`grpc_json_transcoder`: REST and JSON clients call gRPC services (Envoy's
envoy.filters.http.grpc_json_transcoder).

```toml
[http_filters.rest]
type = "grpc_json_transcoder"
proto_descriptor = "/etc/gateway/bookstore.pb"   # protoc --include_imports --descriptor_set_out
services = ["bookstore.v1.Bookstore"]
print_options = { add_whitespace = false, preserve_proto_field_names = false }
convert_grpc_status = true
```

A request whose method and path match a method's google.api.http rule becomes a gRPC
call: POST /package.Service/Method, content-type application/grpc, te: trailers, one
length-prefixed message built from the path's variables, the query string and the JSON
body. The route is then matched again on the gRPC path (unless
`match_incoming_request_route`). The answer becomes JSON: a unary call's head waits for
its grpc-status (the filter holds it, STOP_ITERATION), whose HTTP status it takes, as
Envoy maps them; a server stream leaves at once as a JSON array or one message per line.

Requests no rule matches, gRPC requests, and requests with query parameters that name no
field pass through untouched, as Envoy's do (unless `request_validation_options` says to
refuse them), and so do responses that are not gRPC. The JSON body is held up to
`max_request_body_size` (413 past it) and parsed once whole; a response message is held up
to `max_response_body_size` (500 past it). Large ones are parsed and printed in a worker
thread (OFF_LOOP_BYTES).

The descriptor set is read and every rule checked when the config loads, in the loader's
worker thread: a request only looks its method up.
"""

from typing import Literal
from urllib.parse import unquote

import attrs
import trio

from gateway.config.files import UnreadableFile, read_file
from gateway.config.model import UINT32_MAX, ByteSize, between
from gateway.errors import GatewayError
from gateway.http.filter import (
    STOP_ITERATION,
    DecoderFilterCallbacks,
    FilterContext,
    FilterHeadersStatus,
    HttpFilter,
    HttpFilterFactory,
    HttpFilterType,
)
from gateway.observability.stats import Counter
from gateway.observability.stream_info import StreamInfo
from gateway.protocol import grpc
from gateway.protocol.headers import HeaderMap, LocalReply, RequestHead, ResponseHead
from gateway.protocol.transcoding.messages import (
    PrintOptions,
    RequestError,
    ResponseError,
    ResponseTooLarge,
    ResponseTranslator,
    bind,
    request_messages,
    status_json,
)
from gateway.protocol.transcoding.path_matcher import UrlUnescapeSpec
from gateway.protocol.transcoding.service_map import (
    MethodInfo,
    ServiceMap,
    UnknownService,
    build_service_map,
)

#: A descriptor set with every import (googleapis' whole tree is a few MiB).
MAX_DESCRIPTOR_BYTES = 16 << 20
#: Envoy's default for both body bounds: the connection's buffer limit, 1 MiB.
DEFAULT_MAX_BODY = 1 << 20

_BUFFER_LIMIT = "the transcoder's internal buffer size exceeds the configured limit."
#: JSON work on more bytes than this runs in a worker thread: a 1 MiB body of small items
#: takes protobuf's json_format about a third of a second, which would stall every other
#: stream of the worker's event loop; in a thread they keep their turns (the GIL changes
#: hands every few milliseconds).
OFF_LOOP_BYTES = 64 << 10


@attrs.frozen
class RequestValidationOptions:
    """Refuse what would otherwise pass through untranscoded (Envoy's names)."""

    #: A request no rule matches: 404.
    reject_unknown_method: bool = False
    #: A query parameter that names no field: 400.
    reject_unknown_query_parameters: bool = False


@attrs.frozen
class GrpcJsonTranscoderConfig:
    #: A FileDescriptorSet file (`protoc --include_imports --descriptor_set_out`).
    proto_descriptor: str
    #: Full service names ("package.Service"); no service: the filter does nothing.
    services: list[str]
    print_options: PrintOptions = attrs.Factory(PrintOptions)
    #: Route the transcoded request by its original path instead of the gRPC path.
    match_incoming_request_route: bool = False
    #: Query parameters that bind no field (an API key, say).
    ignored_query_parameters: list[str] = attrs.Factory(list)
    #: Methods without a google.api.http rule take POST /package.Service/Method, body "*".
    auto_mapping: bool = False
    ignore_unknown_query_parameters: bool = False
    #: A failed unary call's body is its google.rpc.Status as JSON.
    convert_grpc_status: bool = False
    url_unescape_spec: Literal[
        "ALL_CHARACTERS_EXCEPT_RESERVED", "ALL_CHARACTERS_EXCEPT_SLASH", "ALL_CHARACTERS"
    ] = "ALL_CHARACTERS_EXCEPT_RESERVED"
    query_param_unescape_plus: bool = False
    match_unregistered_custom_verb: bool = False
    request_validation_options: RequestValidationOptions = attrs.Factory(RequestValidationOptions)
    max_request_body_size: ByteSize = attrs.field(
        default=ByteSize(DEFAULT_MAX_BODY), validator=between(1, UINT32_MAX)
    )
    max_response_body_size: ByteSize = attrs.field(
        default=ByteSize(DEFAULT_MAX_BODY), validator=between(1, UINT32_MAX)
    )
    #: The services' methods by path, built from the descriptor set as the config loads.
    service_map: ServiceMap | None = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        service_map = None
        if self.services:
            service_map = self._build()
        object.__setattr__(self, "service_map", service_map)

    def _build(self) -> ServiceMap:
        try:
            descriptor_set = read_file(self.proto_descriptor, MAX_DESCRIPTOR_BYTES)
        except UnreadableFile as exc:
            raise ValueError(f"'proto_descriptor' must be a readable file: {exc}") from None
        try:
            return build_service_map(
                descriptor_set,
                self.services,
                auto_mapping=self.auto_mapping,
                ignored_query_parameters=self.ignored_query_parameters,
                url_unescape_spec=UrlUnescapeSpec(self.url_unescape_spec),
                query_param_unescape_plus=self.query_param_unescape_plus,
                match_unregistered_custom_verb=self.match_unregistered_custom_verb,
            )
        except UnknownService as exc:
            raise ValueError(
                f"'services' must name services of the descriptor set: {exc}"
            ) from None
        except ValueError as exc:
            raise ValueError(
                f"'proto_descriptor' must be a descriptor set the services' HTTP rules fit: {exc}"
            ) from None


class TranscodingFailed(GatewayError):
    """The request's JSON or variables do not fit the method's message."""

    status = 400

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.body = why


class RequestBufferExceeded(GatewayError):
    status = 413
    body = f"Request rejected because {_BUFFER_LIMIT}"


class ResponseBufferExceeded(GatewayError):
    status = 500
    body = f"Response not transcoded because {_BUFFER_LIMIT}"


class ResponseTranscodingFailed(GatewayError):
    status = 502

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.body = why


@attrs.frozen
class _Shared:
    config: GrpcJsonTranscoderConfig
    service_map: ServiceMap
    request_buffer_exceeded: Counter
    response_buffer_exceeded: Counter


def _grpc_status(headers: HeaderMap) -> int | None:
    """grpc-status as Envoy reads it for transcoding: any uint32; None if absent or not
    a number (answered 503)."""
    value = headers.get("grpc-status")
    if value is None or not value.isdigit() or int(value) > UINT32_MAX:
        return None
    return int(value)


class GrpcJsonTranscoderFilter(HttpFilter):
    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        self._callbacks: DecoderFilterCallbacks | None = None
        #: The method a transcoded request calls (None: not transcoded).
        self._method: MethodInfo | None = None
        self._bound: dict[str, object] = {}
        self._body = bytearray()
        #: The response being transcoded (None: passed through).
        self._head: ResponseHead | None = None
        self._translator: ResponseTranslator | None = None
        #: A unary call's JSON, waiting for the status.
        self._response_body = b""
        #: The body a trailers-only response gets (a stream's "[]", an error's JSON).
        self._made_body: bytes | None = None
        #: This filter's own refusal of a request it had made gRPC: the gateway answers
        #: it as gRPC, and the filter gives the REST client the HTTP reply it meant.
        self._own_error: GatewayError | None = None

    def set_decoder_filter_callbacks(self, callbacks: DecoderFilterCallbacks) -> None:
        self._callbacks = callbacks

    # -- request -------------------------------------------------------------------------

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        shared = self._shared
        config = shared.config
        if (request.headers.get("content-type") or "").startswith("application/grpc"):
            return None  # already gRPC (or gRPC-Web, whose body is no JSON): passed through
        match = shared.service_map.matcher.lookup(request.method, request.path)
        if match is None:
            if config.request_validation_options.reject_unknown_method:
                return LocalReply(404, f"Could not resolve {request.path_only} to a method.")
            return None
        try:
            self._bound = bind(match.value, match.bindings, config.ignore_unknown_query_parameters)
        except LookupError as exc:
            if config.request_validation_options.reject_unknown_query_parameters:
                return LocalReply(400, str(exc))
            return None
        except RequestError as exc:
            return LocalReply(400, str(exc))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_request:
            shared.request_buffer_exceeded.inc()
            return LocalReply(413, RequestBufferExceeded.body)
        method = self._method = match.value
        message = b""
        if end_stream:  # the message is made before the request becomes gRPC: a refusal
            try:  # of it is a plain HTTP reply
                message = self._request_body(b"")
            except TranscodingFailed as exc:
                self._method = None
                return LocalReply(400, exc.body)
        headers = request.headers
        headers.remove("content-length")
        headers.set("content-type", "application/grpc")
        headers.set("x-envoy-original-path", request.path)
        headers.set("x-envoy-original-method", request.method)
        headers.set("te", "trailers")
        request.method, request.path = "POST", method.grpc_path
        assert self._callbacks is not None
        if not config.match_incoming_request_route:
            self._callbacks.clear_route_cache()
        if end_stream:
            self._callbacks.add_decoded_data(message)
        return None

    @property
    def _max_request(self) -> int:
        return self._shared.config.max_request_body_size

    async def decode_data(self, data: bytes, end_stream: bool) -> bytes:
        if self._method is None:
            return data
        try:
            return await self._transcode_request(data, end_stream)
        except (RequestBufferExceeded, TranscodingFailed) as exc:
            self._own_error = exc
            raise

    async def _transcode_request(self, data: bytes, end_stream: bool) -> bytes:
        self._body += data
        if len(self._body) > self._max_request:
            self._shared.request_buffer_exceeded.inc()
            raise RequestBufferExceeded()
        if not end_stream:
            return b""
        body, self._body = bytes(self._body), bytearray()
        if len(body) > OFF_LOOP_BYTES:
            return await trio.to_thread.run_sync(self._request_body, body)
        return self._request_body(body)

    def _request_body(self, body: bytes) -> bytes:
        assert self._method is not None
        try:
            return request_messages(self._method, self._shared.service_map.pool, self._bound, body)
        except RequestError as exc:
            raise TranscodingFailed(str(exc)) from None

    # -- response ------------------------------------------------------------------------

    async def encode_headers(
        self, response: ResponseHead, end_stream: bool
    ) -> FilterHeadersStatus | None:
        # Called again for a response that replaces one (a local reply): start over.
        self._head = self._translator = self._made_body = None
        self._response_body = b""
        method = self._method
        headers = response.headers
        if self._own_error is not None:  # see _own_error
            response.status = self._own_error.status
            headers.remove_names({name for name, _ in headers})
            headers.set("content-type", "text/plain")
            self._head, self._made_body = response, self._own_error.body.encode()
            return STOP_ITERATION
        content_type = headers.get("content-type") or ""
        if method is None or not content_type.startswith("application/grpc"):
            return None  # not transcoded, or not gRPC: passed through
        shared = self._shared
        self._head = response
        self._translator = ResponseTranslator(
            method,
            shared.service_map.pool,
            shared.config.print_options,
            shared.config.max_response_body_size,
        )
        headers.remove("content-length")
        headers.set("content-type", "application/json")
        if end_stream:  # trailers-only: the status is here already
            status = _grpc_status(headers)
            response.status = _http_status(status)
            body = self._error_body(headers, status)
            if body:  # the status is in the body now
                headers.remove_names({"grpc-status", "grpc-message", "grpc-status-details-bin"})
            else:
                body = self._translator.finish()  # a stream with no message: "[]"
            if not body:
                headers.remove("content-type")
                headers.set("content-length", "0")
                return None
            self._made_body = body
            return STOP_ITERATION  # encode_data(b"", True) follows, for the body
        if method.server_streaming:
            return None  # a stream's head leaves at once: 200, messages as they come
        # A unary call's HTTP status is its grpc-status, in the trailers: hold the head.
        headers.remove("trailer")
        return STOP_ITERATION

    async def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        translator, head = self._translator, self._head
        if self._made_body is not None and head is not None:  # made here, not translated
            body, self._made_body = self._made_body, None
            head.headers.set("content-length", str(len(body)))
            return body
        if translator is None or head is None:
            return data
        try:
            if translator.held + len(data) > OFF_LOOP_BYTES:  # see OFF_LOOP_BYTES
                out = await trio.to_thread.run_sync(translator.feed, data)
            else:
                out = translator.feed(data) if data else b""
            if end_stream:
                out += translator.finish()
        except ResponseTooLarge:
            self._shared.response_buffer_exceeded.inc()
            raise ResponseBufferExceeded() from None
        except ResponseError as exc:
            raise ResponseTranscodingFailed(str(exc)) from None
        if translator.server_streaming:
            return out
        # Unary: the body waits with the held head for the status in the trailers.
        self._response_body += out
        if not end_stream:
            return b""
        head.status = 503  # Envoy's answer to a call that ends without a grpc-status
        body, self._response_body = self._response_body, b""
        head.headers.set("content-length", str(len(body)))
        return body

    async def encode_trailers(self, trailers: HeaderMap) -> bytes | None:
        head, translator = self._head, self._translator
        if head is None or translator is None or translator.server_streaming:
            return None  # a stream's trailers go on as they are
        status = _grpc_status(trailers)
        head.status = _http_status(status)
        body = self._error_body(trailers, status) if translator.messages == 0 else None
        if body:
            head.headers.set("content-length", str(len(body)))
        elif status is not None:  # as Envoy: the status in the head, where HTTP/1.1 sees it
            head.headers.set("grpc-status", str(status))
            message = trailers.get("grpc-message")
            if message is not None:
                head.headers.set("grpc-message", message)
        # The body has a content-length, which leaves trailers nowhere to go on HTTP/1.1.
        trailers.remove_names({name for name, _ in trailers})
        return body

    def _error_body(self, headers: HeaderMap, status: int | None) -> bytes | None:
        """convert_grpc_status: a failed call's google.rpc.Status as the JSON body."""
        shared = self._shared
        if not shared.config.convert_grpc_status or not status:
            return None
        message = headers.get("grpc-message")
        return status_json(
            shared.service_map.status_class,
            shared.service_map.pool,
            shared.config.print_options,
            status,
            unquote(message) if message is not None else None,  # percent-encoded on the wire
            headers.get("grpc-status-details-bin"),
        )


def _http_status(status: int | None) -> int:
    """503 for a call that ended without a grpc-status, as Envoy answers it."""
    return 503 if status is None else grpc.http_status_for(status)


def create_factory(config: object, context: FilterContext) -> HttpFilterFactory:
    assert isinstance(config, GrpcJsonTranscoderConfig)
    service_map = config.service_map
    if service_map is None:  # no services: Envoy's disabled filter

        def passthrough(info: StreamInfo) -> HttpFilter:
            return _DISABLED

        return passthrough
    shared = _Shared(
        config,
        service_map,
        context.scope.counter("transcoder_request_buffer_exceeded"),
        context.scope.counter("transcoder_response_buffer_exceeded"),
    )

    def factory(info: StreamInfo) -> HttpFilter:
        return GrpcJsonTranscoderFilter(shared)

    return factory


#: A filter without hooks: the chain skips it.
_DISABLED = HttpFilter()

FILTER_TYPE = HttpFilterType(
    "grpc_json_transcoder",
    GrpcJsonTranscoderConfig,
    create_factory,
    stats={
        "transcoder_request_buffer_exceeded": "JSON bodies over max_request_body_size (413)",
        "transcoder_response_buffer_exceeded": "messages over max_response_body_size (500)",
    },
)
