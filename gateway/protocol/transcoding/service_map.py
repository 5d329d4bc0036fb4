"""A descriptor set's services as REST methods: protobuf's own descriptor pool built from a
FileDescriptorSet, and every method of the configured services registered in a path
matcher by its google.api.http rule (and its additional_bindings).

All the checks Envoy makes at startup happen here, when the config loads: the set parses
and builds, each service exists, each template parses, each variable, body and
response_body names a field. A request then only looks its method up.
"""

from collections.abc import Iterable

import attrs
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.descriptor import MethodDescriptor as ProtoMethod
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from gateway.protocol.transcoding.http_template import parse_template
from gateway.protocol.transcoding.path_matcher import PathMatcher, UrlUnescapeSpec

#: Well-known message types whose JSON form is a string or a number, so that a path
#: variable or query parameter can set them.
_SCALAR_MESSAGES = frozenset(
    f"google.protobuf.{name}"
    for name in (
        *(f"{kind}Value" for kind in ("Double", "Float", "Int64", "UInt64", "Int32")),
        *(f"{kind}Value" for kind in ("UInt32", "Bool", "String", "Bytes")),
        *("Timestamp", "Duration", "FieldMask"),
    )
)


class UnknownService(ValueError):
    """A configured service is not in the descriptor set."""


@attrs.frozen(eq=False)
class MethodInfo:
    """A gRPC method as transcoding sees it."""

    descriptor: ProtoMethod
    #: The gRPC request path, "/package.Service/Method".
    grpc_path: str
    request_class: type[Message]
    response_class: type[Message]
    #: The rule's body: "" (none), "*" (the whole request) or a top-level field's name.
    body: str
    #: The response field that is the whole response body (the rule's response_body).
    response_body: FieldDescriptor | None

    @property
    def server_streaming(self) -> bool:
        return bool(self.descriptor.server_streaming)

    @property
    def client_streaming(self) -> bool:
        return bool(self.descriptor.client_streaming)


@attrs.frozen(eq=False)
class ServiceMap:
    pool: descriptor_pool.DescriptorPool
    matcher: PathMatcher[MethodInfo]
    #: google.rpc.Status, from the set or protobuf's own: the JSON error body.
    status_class: type[Message]


def resolve_field_path(message: Descriptor, path: tuple[str, ...]) -> list[FieldDescriptor]:
    """The fields a dotted path names (by proto or JSON name): singular messages down to
    a leaf that a text can set. ValueError if it names none."""
    fields = []
    for i, name in enumerate(path):
        field = message.fields_by_name.get(name) or _by_json_name(message, name)
        if field is None:
            raise ValueError(f"{message.full_name} has no field {name!r}")
        fields.append(field)
        if i < len(path) - 1:
            if field.message_type is None or field.is_repeated:
                raise ValueError(f"{field.full_name} is not a message field to go into")
            message = field.message_type
        elif (
            field.message_type is not None and field.message_type.full_name not in _SCALAR_MESSAGES
        ):
            raise ValueError(f"{field.full_name} is a message: name one of its fields")
    return fields


def _by_json_name(message: Descriptor, name: str) -> FieldDescriptor | None:
    return next((f for f in message.fields if f.json_name == name), None)


def _add_builtin(pool: descriptor_pool.DescriptorPool, file: FileDescriptor) -> None:
    """Adds a file protobuf itself ships (and what it imports) unless the set has it."""
    try:
        pool.FindFileByName(file.name)
        return
    except KeyError:
        pass
    for dependency in file.dependencies:
        _add_builtin(pool, dependency)
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    pool.Add(proto)


def _rules(rule: http_pb2.HttpRule) -> list[tuple[str, str, http_pb2.HttpRule]]:
    """(HTTP method, template, rule) for a rule and its additional bindings."""
    found = []
    for binding in [rule, *rule.additional_bindings]:
        kind = binding.WhichOneof("pattern")
        if kind is None:
            continue
        if kind == "custom":
            found.append((binding.custom.kind, binding.custom.path, binding))
        else:
            found.append((kind.upper(), getattr(binding, kind), binding))
    return found


def build_service_map(
    descriptor_set: bytes,
    services: list[str],
    *,
    auto_mapping: bool = False,
    ignored_query_parameters: Iterable[str] = (),
    url_unescape_spec: UrlUnescapeSpec = UrlUnescapeSpec.ALL_CHARACTERS_EXCEPT_RESERVED,
    query_param_unescape_plus: bool = False,
    match_unregistered_custom_verb: bool = False,
) -> ServiceMap:
    """The services' methods by path; ValueError saying which part of the set is wrong."""
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file
    except DecodeError as exc:
        raise ValueError(f"not a FileDescriptorSet: {exc}") from None
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        try:
            pool.Add(file)
        except (TypeError, ValueError) as exc:  # a duplicate, or an import not in the set
            raise ValueError(f"cannot build {file.name}: {exc}") from None
    _add_builtin(pool, status_pb2.DESCRIPTOR)
    ignored = frozenset(ignored_query_parameters)
    matcher = PathMatcher[MethodInfo](
        url_unescape_spec, query_param_unescape_plus, match_unregistered_custom_verb
    )
    for name in services:
        try:
            service = pool.FindServiceByName(name)
        except KeyError:
            raise UnknownService(f"no service {name!r} in the descriptor set") from None
        for method in service.methods:
            options = method.GetOptions()
            rule = http_pb2.HttpRule()
            if options.HasExtension(annotations_pb2.http):
                rule = options.Extensions[annotations_pb2.http]
            elif auto_mapping:
                rule.post = f"/{service.full_name}/{method.name}"
                rule.body = "*"
            for http_method, template_text, binding in _rules(rule):
                try:
                    info = _method_info(method, binding)
                    template = parse_template(template_text)
                    for variable in template.variables:
                        resolve_field_path(method.input_type, variable.field_path)
                except ValueError as exc:
                    raise ValueError(f"cannot register {method.full_name}: {exc}") from None
                matcher.register(http_method, template, info, ignored)
    status_class = message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))
    return ServiceMap(pool, matcher, status_class)


def _method_info(method: ProtoMethod, rule: http_pb2.HttpRule) -> MethodInfo:
    if rule.body not in ("", "*") and rule.body not in method.input_type.fields_by_name:
        raise ValueError(f"body: {method.input_type.full_name} has no field {rule.body!r}")
    response_body = None
    if rule.response_body:
        response_body = method.output_type.fields_by_name.get(rule.response_body)
        if response_body is None:
            raise ValueError(
                f"response_body: {method.output_type.full_name} has no field {rule.response_body!r}"
            )
    return MethodInfo(
        method,
        f"/{method.containing_service.full_name}/{method.name}",
        message_factory.GetMessageClass(method.input_type),
        message_factory.GetMessageClass(method.output_type),
        rule.body,
        response_body,
    )
