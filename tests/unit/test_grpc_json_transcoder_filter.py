"""The grpc_json_transcoder filter on its own: JSON work on large bodies runs in a worker
thread, so the event loop's other tasks keep running while a big request is parsed or a
big response printed."""

import json

import pytest
import trio

from gateway.config.load import loads_config
from gateway.http.filter import STOP_ITERATION, HttpFilter
from gateway.http.filters.grpc_json_transcoder import (
    OFF_LOOP_BYTES,
    GrpcJsonTranscoderConfig,
    create_factory,
)
from gateway.observability.stats import StatsStore
from gateway.observability.stream_info import StreamInfo
from gateway.protocol import grpc
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead
from tests.grpc_bookstore import Bookstore, compile_bookstore


@pytest.fixture(scope="module")
def bookstore(tmp_path_factory: pytest.TempPathFactory) -> Bookstore:
    return compile_bookstore(tmp_path_factory.mktemp("bookstore"))


class Callbacks:
    def clear_route_cache(self) -> None:
        pass

    def add_decoded_data(self, data: bytes) -> None:
        raise AssertionError("the request has a body")


def transcoder(bookstore: Bookstore) -> HttpFilter:
    text = f"""
[http_filters.rest]
type = "grpc_json_transcoder"
proto_descriptor = "{bookstore.descriptor_set}"
services = ["bookstore.v1.Bookstore"]
"""
    config = loads_config(text).http_filters["rest"].config
    assert isinstance(config, GrpcJsonTranscoderConfig)
    context = type("Context", (), {"scope": StatsStore().scope("t", "t", {}), "name": "rest"})
    f = create_factory(config, context)(StreamInfo(1, "127.0.0.1:1"))  # type: ignore[arg-type]
    f.set_decoder_filter_callbacks(Callbacks())
    return f


async def ticks_while(work) -> tuple[object, int]:
    """What `work()` returns, and how often a 1 ms ticker ran while it was awaited."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.001)
            ticks += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(0.01)
        before = ticks
        result = await work()
        during = ticks - before
        nursery.cancel_scope.cancel()
    return result, during


async def test_a_large_body_is_parsed_and_printed_off_the_event_loop(bookstore) -> None:
    f = transcoder(bookstore)
    request = RequestHead("PUT", "/v1/shelves/1/books/2", "x", "http", HeaderMap())
    assert await f.decode_headers(request, end_stream=False) is None
    body = json.dumps({"title": "t", "tags": ["x" * 10] * 60_000}).encode()
    assert len(body) > OFF_LOOP_BYTES
    message, during = await ticks_while(lambda: f.decode_data(body, True))
    assert during > 0, "the event loop stood still while the body was parsed"
    [raw], _ = grpc.split_messages(message, 1 << 30)
    assert len(bookstore.pb2.Book.FromString(raw).tags) == 60_000

    head = ResponseHead(200, HeaderMap([("content-type", "application/grpc")]))
    assert await f.encode_headers(head, end_stream=False) is STOP_ITERATION
    answer = grpc.frame(bookstore.pb2.Book(tags=["y" * 10] * 60_000).SerializeToString())
    printed, during = await ticks_while(lambda: f.encode_data(answer, True))
    assert during > 0, "the event loop stood still while the answer was printed"
    assert len(json.loads(printed)["tags"]) == 60_000
