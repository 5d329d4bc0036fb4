"""The filter API's ways to change a response's head after its body and a request's route
and body: a filter holds the response head (STOP_ITERATION) until the response ends, gives
a bodyless request a body (add_decoded_data), and has the route matched again
(clear_route_cache). Driven on an ActiveStream with a recording encoder, no sockets."""

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest

from gateway.errors import UpstreamReset
from gateway.http.active_stream import ActiveStream
from gateway.http.filter import (
    STOP_ITERATION,
    DecoderFilterCallbacks,
    FilterHeadersStatus,
    HttpFilter,
)
from gateway.observability.stream_info import StreamInfo
from gateway.protocol.headers import HeaderMap, LocalReply, RequestHead, ResponseHead


class Recorder:
    """The downstream side: what reaches the client, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []

    async def continue_if_expected(self) -> None:
        pass

    async def encode_headers(self, head: ResponseHead, end_stream: bool, flush: bool) -> None:
        headers = {n: v for n, v in head.headers if n != "date"}
        self.sent.append(("headers", head.status, headers, end_stream))

    async def encode_data(self, data: bytes, end_stream: bool, flush: bool = True) -> None:
        self.sent.append(("data", data, end_stream))

    async def encode_trailers(self, trailers: HeaderMap) -> None:
        self.sent.append(("trailers", list(trailers)))

    async def body_consumed(self, size: int) -> None:
        pass

    def abort(self) -> None:
        self.sent.append(("abort",))

    def close_after_response(self) -> None:
        pass


@attrs.define
class Routes:
    matched: list[str] = attrs.Factory(list)

    def route(self, request: RequestHead) -> None:
        self.matched.append(request.path)


@attrs.define
class Callbacks:
    """The connection manager's side of the stream: the filters, a route table that
    records what it was asked to match, no overload."""

    filters: list[HttpFilter]
    route_table: Routes = attrs.Factory(Routes)
    stop_accepting_requests: Any = attrs.Factory(lambda: attrs.make_class("Off", {})())
    stats: Any = None
    alt_svc: str | None = None

    def __attrs_post_init__(self) -> None:
        self.stop_accepting_requests.active = False

    def filters_for(self, route: object) -> list[Callable[[StreamInfo], HttpFilter]]:
        return [(lambda info, f=f: f) for f in self.filters]


async def run(
    filters: list[HttpFilter], router: Callable[[ActiveStream], Awaitable[None]]
) -> tuple[Recorder, Callbacks]:
    encoder = Recorder()
    callbacks = Callbacks(filters)
    request = RequestHead("GET", "/v1/things/1", "example", "http", HeaderMap())
    stream = ActiveStream(callbacks, encoder, request, StreamInfo(1, "127.0.0.1:1"), None)  # type: ignore[arg-type]
    await stream.run(router)
    return encoder, callbacks


class StatusFromTrailers(HttpFilter):
    """Holds the head; the body it keeps and upper-cases; the trailers' status becomes the
    head's status and their text the body's last bytes (a transcoder's shape)."""

    def __init__(self) -> None:
        self.head: ResponseHead | None = None
        self.kept = b""

    async def encode_headers(
        self, response: ResponseHead, end_stream: bool
    ) -> FilterHeadersStatus | None:
        self.head = None
        if response.headers.get("content-type") != "application/grpc":
            return None  # e.g. a local reply: not this filter's to hold
        self.head = response
        if end_stream:
            response.status = int(response.headers.get("x-status") or 200)
        return STOP_ITERATION

    async def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        if self.head is None:
            return data
        self.kept += data
        if not end_stream:
            return b""
        self.head.headers.set("content-type", "text/plain")
        return self.kept.upper() or b"(empty)"

    async def encode_trailers(self, trailers: HeaderMap) -> bytes | None:
        assert self.head is not None
        self.head.status = int(trailers.get("x-status") or 200)
        trailers.remove("x-status")
        return b"!"


class Witness(HttpFilter):
    """Configured before the holder, so after it on the way back: records what it sees."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    async def encode_headers(self, response: ResponseHead, end_stream: bool) -> None:
        self.seen.append(("headers", response.status, end_stream))

    async def encode_data(self, data: bytes, end_stream: bool) -> bytes:
        self.seen.append(("data", data, end_stream))
        return data


def grpc_head() -> ResponseHead:
    return ResponseHead(200, HeaderMap([("content-type", "application/grpc")]))


async def test_a_held_head_leaves_at_the_end_with_the_status_the_trailers_gave_it() -> None:
    sent_while_held: list[int] = []

    async def router(stream: ActiveStream) -> None:
        await stream.encode_headers(grpc_head(), end_stream=False)
        await stream.encode_data(b"ab", end_stream=False)
        await stream.encode_data(b"c", end_stream=False)
        sent_while_held.append(len(encoder.sent))
        await stream.encode_trailers(HeaderMap([("x-status", "404"), ("x-more", "1")]))

    witness = Witness()
    encoder = Recorder()
    callbacks = Callbacks([witness, StatusFromTrailers()])
    request = RequestHead("GET", "/", "example", "http", HeaderMap())
    stream = ActiveStream(callbacks, encoder, request, StreamInfo(1, "127.0.0.1:1"), None)  # type: ignore[arg-type]
    await stream.run(router)
    assert sent_while_held == [0]  # nothing reached the client while the head was held
    assert encoder.sent == [
        ("headers", 404, {"content-type": "text/plain"}, False),
        ("data", b"ABC!", False),
        ("trailers", [("x-more", "1")]),
    ]
    # The filter after the holder saw the head as the holder left it, then the body.
    assert witness.seen == [
        ("headers", 404, False),
        ("data", b"ABC!", False),
        ("data", b"", True),
    ]
    assert stream.info.response_code == 404


async def test_trailers_the_holder_empties_end_the_body() -> None:
    async def router(stream: ActiveStream) -> None:
        await stream.encode_headers(grpc_head(), end_stream=False)
        await stream.encode_data(b"x", end_stream=False)
        await stream.encode_trailers(HeaderMap([("x-status", "503")]))

    encoder, _ = await run([StatusFromTrailers()], router)
    assert encoder.sent == [
        ("headers", 503, {"content-type": "text/plain"}, False),
        ("data", b"X!", True),
    ]


async def test_a_held_head_that_ended_the_response_gets_the_body_its_filter_makes() -> None:
    async def router(stream: ActiveStream) -> None:
        head = grpc_head()
        head.headers.set("x-status", "400")
        await stream.encode_headers(head, end_stream=True)

    encoder, _ = await run([StatusFromTrailers()], router)
    assert encoder.sent == [
        ("headers", 400, {"content-type": "text/plain", "x-status": "400"}, False),
        ("data", b"(empty)", True),
    ]


async def test_a_response_ending_without_trailers_lets_the_head_go_with_the_body() -> None:
    async def router(stream: ActiveStream) -> None:
        await stream.encode_headers(grpc_head(), end_stream=False)
        await stream.encode_data(b"done", end_stream=True)

    encoder, _ = await run([StatusFromTrailers()], router)
    assert encoder.sent == [
        ("headers", 200, {"content-type": "text/plain"}, False),
        ("data", b"DONE", True),
    ]


async def test_a_failure_while_the_head_is_held_is_answered_with_a_local_reply() -> None:
    """Nothing reached the client: the upstream's failure still gets its status."""

    async def router(stream: ActiveStream) -> None:
        await stream.encode_headers(grpc_head(), end_stream=False)
        await stream.encode_data(b"partial", end_stream=False)
        raise UpstreamReset("gone")

    witness = Witness()
    encoder, _ = await run([witness, StatusFromTrailers()], router)
    reply = [("headers", UpstreamReset.status), ("data", UpstreamReset.body.encode())]
    assert [s[:2] for s in encoder.sent] == reply
    assert witness.seen[0] == ("headers", UpstreamReset.status, False)


class HoldsWithoutDataHook(HttpFilter):
    async def encode_headers(
        self, response: ResponseHead, end_stream: bool
    ) -> FilterHeadersStatus | None:
        return STOP_ITERATION if response.status == 200 else None


async def test_holding_needs_a_data_hook() -> None:
    async def router(stream: ActiveStream) -> None:
        await stream.encode_headers(grpc_head(), end_stream=False)

    encoder, _ = await run([HoldsWithoutDataHook()], router)
    assert encoder.sent[0][:2] == ("headers", 500)


class MakesABody(HttpFilter):
    """Turns a bodyless GET into a POST with a body, to another path."""

    def set_decoder_filter_callbacks(self, callbacks: DecoderFilterCallbacks) -> None:
        self.callbacks = callbacks

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        assert end_stream
        request.method, request.path = "POST", "/rewritten"
        self.callbacks.clear_route_cache()
        self.callbacks.add_decoded_data(b"made")
        return None

    async def decode_data(self, data: bytes, end_stream: bool) -> bytes:
        raise AssertionError("the body a filter makes goes to the filters after it only")


class Upper(HttpFilter):
    def __init__(self) -> None:
        self.end_stream_in_headers: bool | None = None

    async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
        self.end_stream_in_headers = end_stream
        return None

    async def decode_data(self, data: bytes, end_stream: bool) -> bytes:
        return data.upper() + (b"|end" if end_stream else b"")


async def test_a_filter_gives_a_bodyless_request_a_body_and_has_it_routed_again() -> None:
    received: list[bytes | None] = []

    async def router(stream: ActiveStream) -> None:
        assert stream.route is None  # matched again, on the rewritten request
        assert stream.has_request_body
        received.append(await stream.receive_body())
        received.append(await stream.receive_body())
        await stream.send_local_reply(LocalReply(204))

    upper = Upper()
    encoder, callbacks = await run([MakesABody(), upper], router)
    assert received == [b"MADE|end", None]
    assert upper.end_stream_in_headers is False
    assert callbacks.route_table.matched == ["/v1/things/1", "/rewritten"]
    assert encoder.sent[0][:2] == ("headers", 204)


async def test_only_a_bodyless_request_may_be_given_a_body() -> None:
    class Adds(HttpFilter):
        def set_decoder_filter_callbacks(self, callbacks: DecoderFilterCallbacks) -> None:
            self.callbacks = callbacks

        async def decode_headers(self, request: RequestHead, end_stream: bool) -> LocalReply | None:
            self.callbacks.add_decoded_data(b"one")
            self.callbacks.add_decoded_data(b"two")
            return None

    async def router(stream: ActiveStream) -> None:
        pytest.fail("the filter's error stops the request")

    encoder, _ = await run([Adds()], router)
    assert encoder.sent[0][:2] == ("headers", 500)
