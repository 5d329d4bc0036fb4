"""JSON to gRPC messages and back, through protobuf's json_format only.

A request's message is built in two steps, both json_format.ParseDict: the variables of
its path and query string (as a JSON object of strings, which json_format converts by the
fields' types), then its JSON body on top, so the body wins where both set a field (as
Envoy does). Parsing costs time in proportion to the body, which the filter bounds
(max_request_body_size) before any of it is parsed.

A response's messages are cut from the gRPC body as they complete (never more than
max_response_body_size held) and printed with json_format.MessageToDict and the
configured print options.
"""

import base64
import binascii
import json
import struct
from typing import Any

import attrs
from google.protobuf import descriptor_pool, json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from gateway.protocol import grpc
from gateway.protocol.transcoding.path_matcher import Binding
from gateway.protocol.transcoding.service_map import MethodInfo, resolve_field_path

_BOOLEANS = {"true": True, "false": False}
_BOOL_MESSAGE = "google.protobuf.BoolValue"
_PREFIX = struct.Struct(">BI")
#: What grpc.split_messages is told: the translator checks sizes itself, from the prefix.
_NO_LIMIT = 2**32


class RequestError(ValueError):
    """The request cannot become a gRPC message: the client's mistake (400)."""


class ResponseError(ValueError):
    """The upstream's answer cannot become JSON (502)."""


class ResponseTooLarge(ValueError):
    """A response message (or what is held of one) is over max_response_body_size (500)."""


@attrs.frozen
class PrintOptions:
    """`print_options` (Envoy's names): how response messages are printed."""

    add_whitespace: bool = False
    always_print_primitive_fields: bool = False
    always_print_enums_as_ints: bool = False
    preserve_proto_field_names: bool = False
    #: Server streaming as one JSON object per line instead of one JSON array.
    stream_newline_delimited: bool = False


def bind(method: MethodInfo, bindings: list[Binding], ignore_unknown: bool) -> dict[str, Any]:
    """The variables as a JSON object for json_format, keyed by proto field names. Raises
    LookupError for a variable that names no field (Envoy passes such a request through
    untouched), unless `ignore_unknown`; RequestError for a value a boolean cannot take."""
    bound: dict[str, Any] = {}
    for path, text in bindings:
        try:
            fields = resolve_field_path(method.descriptor.input_type, path)
        except ValueError as exc:
            if ignore_unknown:
                continue
            raise LookupError(str(exc)) from None
        node = bound
        for field in fields[:-1]:
            node = node.setdefault(field.name, {})
        leaf = fields[-1]
        value: str | bool = text
        if leaf.type == FieldDescriptor.TYPE_BOOL or (
            leaf.message_type is not None and leaf.message_type.full_name == _BOOL_MESSAGE
        ):
            # json_format takes JSON's true and false, not the strings a URL carries.
            if text not in _BOOLEANS:
                raise RequestError(f"{'.'.join(path)}: expected true or false, got {text!r}")
            value = _BOOLEANS[text]
        if leaf.is_repeated:
            node.setdefault(leaf.name, []).append(value)
        else:
            node[leaf.name] = value
    return bound


def request_messages(
    method: MethodInfo,
    pool: descriptor_pool.DescriptorPool,
    bound: dict[str, Any],
    body: bytes,
) -> bytes:
    """The gRPC request body (length-prefixed messages) for the variables and JSON body.
    A client-streaming method takes a JSON array of messages. RequestError if the body is
    not JSON of the request's shape."""
    value = None
    if body.strip():
        try:
            value = json.loads(body)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep
            raise RequestError(f"the body is not JSON: {exc}") from None
    values = [value]
    if method.client_streaming:
        values = value if isinstance(value, list) else [] if value is None else [value]
    out = []
    for one in values:
        message = method.request_class()
        try:
            json_format.ParseDict(bound, message, descriptor_pool=pool)
            if one is not None:
                if method.body in ("", "*"):  # no body rule: Envoy reads it as "*"
                    if not isinstance(one, dict):
                        raise RequestError("the body must be a JSON object")
                    json_format.ParseDict(one, message, descriptor_pool=pool)
                else:
                    json_format.ParseDict({method.body: one}, message, descriptor_pool=pool)
        except (json_format.ParseError, TypeError, RecursionError) as exc:
            raise RequestError(str(exc)) from None
        out.append(grpc.frame(message.SerializeToString()))
    return b"".join(out)


def _dumps(value: object, options: PrintOptions) -> bytes:
    if options.add_whitespace:
        return json.dumps(value, ensure_ascii=False, indent=2).encode()
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _as_dict(
    message: Message, options: PrintOptions, pool: descriptor_pool.DescriptorPool
) -> dict[str, Any]:
    return json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=options.always_print_primitive_fields,
        preserving_proto_field_name=options.preserve_proto_field_names,
        use_integers_for_enums=options.always_print_enums_as_ints,
        descriptor_pool=pool,
    )


def message_json(
    method: MethodInfo, data: bytes, options: PrintOptions, pool: descriptor_pool.DescriptorPool
) -> bytes:
    """One response message as JSON: the whole message, or its response_body field."""
    try:
        message = method.response_class.FromString(data)
    except DecodeError as exc:
        raise ResponseError(f"the upstream's message does not parse: {exc}") from None
    field = method.response_body
    if field is None:
        return _dumps(_as_dict(message, options, pool), options)
    if field.message_type is not None and not field.is_repeated:
        return _dumps(_as_dict(getattr(message, field.name), options, pool), options)
    # A scalar or repeated field prints as its own JSON value, default value included.
    whole = json_format.MessageToDict(
        message,
        always_print_fields_with_no_presence=True,
        preserving_proto_field_name=True,
        use_integers_for_enums=options.always_print_enums_as_ints,
        descriptor_pool=pool,
    )
    return _dumps(whole.get(field.name), options)


class ResponseTranslator:
    """Cuts a gRPC response body into messages and prints them: a unary method's one
    message as the body; a server-streaming method's as a JSON array (`[a,b]`), or one per
    line. Holds at most `max_size` bytes of a message not yet complete."""

    def __init__(
        self,
        method: MethodInfo,
        pool: descriptor_pool.DescriptorPool,
        options: PrintOptions,
        max_size: int,
    ) -> None:
        self._method = method
        self._pool = pool
        self._options = options
        self._max = max_size
        self._pending: list[bytes] = []
        self._held = 0
        #: Bytes needed before the next message is whole (its prefix, then all of it).
        self._need = _PREFIX.size
        self.messages = 0

    @property
    def server_streaming(self) -> bool:
        return self._method.server_streaming

    @property
    def held(self) -> int:
        """Bytes of a message not yet complete."""
        return self._held

    def feed(self, data: bytes) -> bytes:
        """JSON for the messages `data` completes (unary: kept for `finish`)."""
        self._pending.append(data)
        self._held += len(data)
        if self._held < self._need:
            return b""
        try:
            # The size is checked here, against the prefix, before any of it is held.
            messages, rest = grpc.split_messages(b"".join(self._pending), _NO_LIMIT)
        except ValueError as exc:  # a compressed message: never asked for
            raise ResponseError(str(exc)) from None
        self._pending = [rest] if rest else []
        self._held = len(rest)
        self._need = _PREFIX.size
        if len(rest) >= _PREFIX.size:
            self._need += _PREFIX.unpack_from(rest)[1]
        if self._need > self._max + _PREFIX.size or any(len(m) > self._max for m in messages):
            raise ResponseTooLarge()
        out = []
        streaming = self._method.server_streaming
        for message in messages:
            if streaming or self.messages == 0:
                out.append(
                    self._framed(message_json(self._method, message, self._options, self._pool))
                )
            self.messages += 1
        return b"".join(out)

    def _framed(self, text: bytes) -> bytes:
        if not self._method.server_streaming:
            return text
        if self._options.stream_newline_delimited:
            return text + b"\n"
        return (b"[" if self.messages == 0 else b",") + text

    def finish(self) -> bytes:
        """The end of a server stream's JSON ("]", or "[]" if there was no message)."""
        if self._pending:
            raise ResponseError("the upstream's body ends inside a message")
        if not self._method.server_streaming or self._options.stream_newline_delimited:
            return b""
        return b"]" if self.messages else b"[]"


def status_json(
    status_class: type[Message],
    pool: descriptor_pool.DescriptorPool,
    options: PrintOptions,
    code: int,
    message: str | None,
    details: str | None,
) -> bytes | None:
    """A gRPC error as a JSON google.rpc.Status (Envoy's convert_grpc_status): the one in
    grpc-status-details-bin if it parses and its details' types are in the descriptor
    set, else one made of grpc-status and grpc-message. None if neither prints."""
    status = None
    if details is not None:
        try:
            # Base64 without padding is how gRPC sends binary headers.
            raw = base64.b64decode(details + "=" * (-len(details) % 4), validate=True)
            status = status_class.FromString(raw)
        except (binascii.Error, DecodeError, ValueError):
            status = None
    if status is None:
        status = status_class(code=code, message=message or "")
    try:
        return _dumps(_as_dict(status, options, pool), options)
    except (TypeError, json_format.Error):  # an Any whose type the set does not have
        if details is None:
            return None
        return status_json(status_class, pool, options, code, message, None)
