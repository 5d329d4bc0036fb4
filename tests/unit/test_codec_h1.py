"""The HTTP/1.1 codecs, sans-IO: the exchanges the e2e tests cannot easily provoke from real
clients and servers (pipelined bodies in one read, an upgrade request with a body, an
answer to HEAD, a close-delimited body, out-of-step upstreams). Every test runs on both
parsers (`http1_parser`): the codecs promise the same on either."""

from collections.abc import Callable

import pytest

from gateway.errors import DownstreamProtocolError, UpstreamReset
from gateway.protocol.codec_h1 import Http1Parser
from gateway.protocol.codec_h1_client import ClientCodec
from gateway.protocol.codec_h1_server import ServerCodec
from gateway.protocol.events import (
    NEED_DATA,
    PAUSED,
    ConnectionEnded,
    Data,
    EndStream,
    RequestHeaders,
    ResponseHeaders,
)
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead

Server = Callable[[], ServerCodec]
Client = Callable[[], ClientCodec]


@pytest.fixture(params=["llhttp", "h11"])
def parser(request: pytest.FixtureRequest) -> Http1Parser:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def server(parser: Http1Parser) -> Server:
    return lambda: ServerCodec(
        max_header_bytes=8192, max_header_count=100, scheme="http", parser=parser
    )


@pytest.fixture
def client(parser: Http1Parser) -> Client:
    return lambda: ClientCodec(max_header_bytes=8192, parser=parser)


def drain(codec: ServerCodec | ClientCodec) -> list[object]:
    events = []
    while (event := codec.next_event()) not in (NEED_DATA, PAUSED):
        events.append(event)
        if isinstance(event, EndStream | ConnectionEnded):
            break
    return events


def respond(codec: ServerCodec, method: str = "GET", **headers: str) -> bytes:
    head = ResponseHead(200, HeaderMap(headers.items()))
    return codec.send_response_head(head, request_method=method) + codec.send_end()


def get(path: str = "/", method: str = "GET", **headers: str) -> RequestHead:
    return RequestHead(method, path, "up", "http", HeaderMap([("host", "up"), *headers.items()]))


def test_pipelined_requests_with_bodies_come_one_exchange_at_a_time(server):
    codec = server()
    codec.receive_data(
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n"
    )
    first = drain(codec)
    assert [type(e) for e in first] == [RequestHeaders, Data, EndStream]
    assert first[0].head.path == "/a" and first[1].data == b"abc"
    assert codec.next_event() is PAUSED and codec.buffered_bytes > 0
    respond(codec, **{"content-length": "0"})
    codec.start_next_cycle()
    second = drain(codec)
    assert second[0].head.path == "/b" and second[0].stream_id == 2
    assert [e.data for e in second if isinstance(e, Data)] == [b"de"]
    assert codec.buffered_bytes == 0


_CHUNKED_WITH_TRAILER = (
    b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n"
)


@pytest.mark.parametrize("bytewise", [False, True])
def test_trailers_come_with_the_end_and_the_next_request_follows(server, bytewise):
    codec = server()
    data = _CHUNKED_WITH_TRAILER + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    for chunk in [data[i : i + 1] for i in range(len(data))] if bytewise else [data]:
        codec.receive_data(chunk)
    first = drain(codec)
    assert b"".join(e.data for e in first if isinstance(e, Data)) == b"abc"
    assert list(first[-1].trailers) == [("x-sum", "9")]
    respond(codec, **{"content-length": "0"})
    codec.start_next_cycle()
    (second,) = drain(codec)
    assert second.head.path == "/b" and second.end_stream


@pytest.mark.parametrize(
    "trailers",
    [b"X-A: 1\nX-B: 2\r\n\r\n", b"X-A: 1\r\n\n", b"X-A: 1\r\n fold\r\n\r\n", b"X-A: \x7f\r\n\r\n"],
)
def test_a_malformed_trailer_section_is_refused(server, trailers):
    codec = server()
    codec.receive_data(_CHUNKED_WITH_TRAILER.split(b"X-Sum")[0] + trailers)
    with pytest.raises(DownstreamProtocolError):
        drain(codec)


def test_upgrade_request_with_a_body_is_served_as_an_ordinary_request(server):
    codec = server()
    codec.receive_data(
        b"POST /u HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 5\r\n\r\nhel"
    )
    codec.receive_data(b"loGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
    events = drain(codec)
    assert events[0].head.upgrade is None and not events[0].end_stream
    assert b"".join(e.data for e in events if isinstance(e, Data)) == b"hello"
    assert isinstance(events[-1], EndStream)
    assert codec.buffered_bytes > 0  # the next request was parsed on, not taken as upgraded


def test_refused_upgrade_closes_and_accepted_one_hands_over_the_bytes(server):
    codec = server()
    codec.receive_data(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    (request,) = drain(codec)
    assert request.head.upgrade == "websocket" and request.end_stream
    head = respond(codec, **{"content-length": "0"})  # refused: an ordinary answer
    assert b"connection: close" in head and not codec.reusable

    codec = server()
    codec.receive_data(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81"
    )
    drain(codec)
    codec.receive_data(b"\x05")
    codec.send_switching_protocols(ResponseHead(101, HeaderMap([("upgrade", "websocket")])))
    assert codec.take_trailing_data() == b"\x81\x05"
    assert not codec.reusable


def unframed_answer(request: bytes, server: Server) -> tuple[ServerCodec, bytes]:
    """A server codec that parsed `request` and sent a 200 head with no framing header."""
    codec = server()
    codec.receive_data(request)
    drain(codec)
    return codec, codec.send_response_head(ResponseHead(200, HeaderMap()), request_method="GET")


def test_connect_closes_after_its_response(server):
    codec = server()
    codec.receive_data(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    (request,) = drain(codec)
    assert request.head.method == "CONNECT" and request.end_stream
    head = respond(codec, **{"content-length": "0"})
    assert b"connection: close" in head and not codec.reusable


def test_http10_client_gets_a_close_delimited_body(server):
    codec, head = unframed_answer(b"GET / HTTP/1.0\r\n\r\n", server)
    assert b"transfer-encoding" not in head and b"connection: close" in head
    assert codec.send_data(b"body") == b"body"
    codec.send_end()
    assert not codec.reusable


def test_unframed_response_to_http11_is_chunked_with_trailers(server):
    codec, head = unframed_answer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", server)
    assert head.endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert codec.send_data(b"abc") == b"3\r\nabc\r\n"
    assert codec.send_end(HeaderMap([("grpc-status", "0")])) == b"0\r\ngrpc-status: 0\r\n\r\n"
    assert codec.reusable


@pytest.mark.parametrize(
    "headers",
    [{"x-a": "b\r\nx-forged: 1"}, {"bad name": "v"}, {"x-a": "nul\x00"}, {"x-a": "\u20ac"}],
)
def test_headers_that_would_break_the_head_are_refused(headers, server):
    codec = server()
    codec.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    drain(codec)
    with pytest.raises(ValueError):
        codec.send_response_head(
            ResponseHead(200, HeaderMap(headers.items())), request_method="GET"
        )


def test_http09_and_http2_request_lines_are_refused(server):
    for line in (b"GET /\r\n\r\n", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"):
        codec = server()
        codec.receive_data(line)
        with pytest.raises(DownstreamProtocolError):
            codec.next_event()


def test_answer_to_head_ends_with_its_head_and_the_next_exchange_parses(client):
    codec = client()
    codec.send_request_head(get(method="HEAD"))
    codec.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
    events = drain(codec)
    assert [type(e) for e in events] == [ResponseHeaders, EndStream]
    codec.send_end()
    assert codec.reusable
    codec.start_next_cycle()
    codec.send_request_head(get())
    codec.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert [e.data for e in drain(codec) if isinstance(e, Data)] == [b"ok"]


_CHUNKED_OK = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
_POISON = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED"


@pytest.mark.parametrize(
    ("method", "response", "body"),
    [
        ("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", b"ok"),
        ("GET", _CHUNKED_OK, b"ok"),
        ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 8\r\n\r\n", b""),
        ("GET", b"HTTP/1.1 304 Not Modified\r\n\r\n", b""),
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n", b""),
    ],
)
@pytest.mark.parametrize("same_read", [True, False])
def test_bytes_past_a_response_make_the_connection_unusable(
    method, response, body, same_read, client
):
    """Response poisoning: what an upstream sends past the end of a response (a second
    response, a body where none may be) must never become the next request's response."""
    codec = client()
    codec.send_request_head(get(method=method))
    codec.send_end()
    codec.receive_data(response + _POISON if same_read else response)
    events = drain(codec)
    assert [type(e) for e in events][:: len(events) - 1] == [ResponseHeaders, EndStream]
    assert b"".join(e.data for e in events if isinstance(e, Data)) == body
    if not same_read:
        assert codec.reusable
        codec.receive_data(_POISON)
    assert not codec.reusable and codec.protocol_error


def test_interim_responses_are_skipped_and_101_hands_over_the_bytes(client):
    codec = client()
    codec.send_request_head(get())
    codec.receive_data(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    events = drain(codec)
    assert events[0].head.status == 200 and isinstance(events[-1], EndStream)

    codec = client()
    codec.send_request_head(get(connection="upgrade", upgrade="websocket"))
    codec.receive_data(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
        b"\r\n\x81\x00"
    )
    assert codec.next_event().head.status == 101
    assert codec.next_event() is NEED_DATA
    assert codec.take_trailing_data() == b"\x81\x00"

    codec = client()  # a switch the upstream did not announce is not followed
    codec.send_request_head(get(connection="upgrade", upgrade="websocket"))
    codec.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
    with pytest.raises(UpstreamReset):
        codec.next_event()


def test_body_until_close_ends_at_eof_and_a_cut_body_is_an_upstream_reset(client):
    codec = client()
    codec.send_request_head(get())
    codec.receive_data(b"HTTP/1.1 200 OK\r\n\r\nsome")
    codec.receive_data(b"")
    assert [type(e) for e in drain(codec)] == [ResponseHeaders, Data, EndStream]
    codec.send_end()
    assert not codec.reusable

    codec = client()
    codec.send_request_head(get())
    codec.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
    codec.receive_data(b"")
    with pytest.raises(UpstreamReset):
        drain(codec)


def test_idle_upstream_close_is_connection_ended(client):
    codec = client()
    codec.receive_data(b"")
    assert isinstance(codec.next_event(), ConnectionEnded)


def test_content_length_is_held_to_on_output(client):
    codec = client()
    codec.send_request_head(get(method="POST", **{"content-length": "3"}))
    with pytest.raises(ValueError):
        codec.send_data(b"toolong")
    codec = client()
    codec.send_request_head(get(method="POST", **{"content-length": "3"}))
    codec.send_data(b"ab")
    with pytest.raises(ValueError):
        codec.send_end()


def test_a_refusal_names_the_problem_without_quoting_the_request(server):
    codec = server()
    codec.receive_data(
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz-secret\r\n"
    )
    with pytest.raises(DownstreamProtocolError) as refused:
        drain(codec)
    assert refused.value.status == 400 and "secret" not in str(refused.value)


@pytest.mark.parametrize(
    "trailer", [b"Content-Length: 0\r\n", b"X-Sum: 1\r\nContent-Length: 5\r\n"]
)
def test_a_broken_response_trailer_section_ends_the_body_and_condemns_the_connection(
    client, trailer
):
    codec = client()
    codec.send_request_head(RequestHead("GET", "/", "x", "http", HeaderMap(), "1.1"))
    codec.send_end()
    codec.receive_data(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
        + trailer
        + b"\r\n"
    )
    events = drain(codec)
    assert [type(e) for e in events] == [ResponseHeaders, Data, EndStream]
    assert events[1].data == b"hello"
    assert events[2].trailers is None  # none of the section is trusted
    assert codec.protocol_error and not codec.reusable
