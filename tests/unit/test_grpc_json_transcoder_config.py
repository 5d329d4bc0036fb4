"""The grpc_json_transcoder's config: the docs' example loads (with the test descriptor set
standing in for its path), and whatever the descriptor set or the services get wrong is an
error naming the TOML key, found when the config loads, not on a request."""

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from bench.transcoder_cost import descriptor_set, gateway_toml
from gateway.config.load import loads_config, unstructure_config
from tests.grpc_bookstore import Bookstore, compile_bookstore
from tests.unit.test_config import docs_example, errors_of


@pytest.fixture(scope="module")
def bookstore(tmp_path_factory: pytest.TempPathFactory) -> Bookstore:
    return compile_bookstore(tmp_path_factory.mktemp("bookstore"))


def example(descriptor: str) -> str:
    text = docs_example('type = "grpc_json_transcoder"')
    return text.replace("/etc/gateway/bookstore.pb", descriptor)


def test_the_docs_example_loads_and_builds_the_service_map(bookstore):
    config = loads_config(example(str(bookstore.descriptor_set)))
    transcoder = config.http_filters["rest"].config
    assert transcoder.max_request_body_size == 64 * 1024
    match = transcoder.service_map.matcher.lookup("GET", "/v1/shelves/7")
    assert match.value.grpc_path == "/bookstore.v1.Bookstore/GetShelf"
    # The map is built state, not config: /config_dump shows what was written.
    dumped = unstructure_config(config)["http_filters"]["rest"]
    assert "service_map" not in dumped
    assert dumped["services"] == ["bookstore.v1.Bookstore"]


def test_an_unknown_service_or_an_unreadable_set_names_its_key(bookstore, tmp_path):
    text = example(str(bookstore.descriptor_set))
    assert errors_of(text.replace('["bookstore.v1.Bookstore"]', '["bookstore.v1.Nope"]')) == [
        "http_filters.rest.services: must name services of the descriptor set: "
        "no service 'bookstore.v1.Nope' in the descriptor set"
    ]
    (garbage := tmp_path / "garbage.pb").write_bytes(b"\xff\xff\xff")
    [error] = errors_of(example(str(garbage)))
    assert error.startswith("http_filters.rest.proto_descriptor: must be a descriptor set")
    [error] = errors_of(example("/dev/zero"))
    assert error.startswith("http_filters.rest.proto_descriptor: must be a readable file")


def descriptor_set_with(rule: http_pb2.HttpRule) -> bytes:
    """A set with one service, shop.Shop, whose method Get(Item) returns Item by `rule`."""
    file = descriptor_pb2.FileDescriptorProto(name="shop.proto", package="shop", syntax="proto3")
    item = file.message_type.add(name="Item")
    item.field.add(name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING)
    method = file.service.add(name="Shop").method.add(
        name="Get", input_type=".shop.Item", output_type=".shop.Item"
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    return descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString()


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        (http_pb2.HttpRule(get="/items/{name}"), "shop.Item has no field 'name'"),
        (http_pb2.HttpRule(get="/items/**/x"), "'**' may only be the last segment"),
        (http_pb2.HttpRule(post="/items", body="thing"), "body: shop.Item has no field 'thing'"),
        (http_pb2.HttpRule(get="/i", response_body="x"), "response_body: shop.Item has no"),
    ],
)
def test_a_rule_that_does_not_fit_its_messages_is_a_config_error(tmp_path, rule, why):
    (descriptor := tmp_path / "shop.pb").write_bytes(descriptor_set_with(rule))
    text = example(str(descriptor)).replace('["bookstore.v1.Bookstore"]', '["shop.Shop"]')
    [error] = errors_of(text)
    assert error.startswith(
        "http_filters.rest.proto_descriptor: must be a descriptor set the services' HTTP "
        "rules fit: cannot register shop.Shop.Get: "
    )
    assert why in error


def test_the_benchmarks_config_loads(tmp_path):
    """bench/transcoder_cost.py compiles its proto and configures the filter with it."""
    config = loads_config(gateway_toml(10000, 50051, descriptor_set(tmp_path)))
    transcoder = config.http_filters["rest"].config
    assert transcoder.service_map.matcher.lookup("GET", "/v1/shelves/1") is not None
