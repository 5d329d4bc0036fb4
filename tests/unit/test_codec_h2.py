"""The HTTP/2 codec, sans-IO: a client codec and a server codec wired back to back (h11's
ConnectionPair), and raw frames built with hyperframe where a peer must misbehave (h2's
frame factory). No sockets, no Trio."""

import attrs
import hyperframe.frame
import pytest

from gateway.config.model import Http2ProtocolOptions
from gateway.protocol.codec_h2 import (
    CANCEL,
    ENHANCE_YOUR_CALM,
    H2Codec,
    H2ConnectionError,
    H2Event,
    StreamGone,
)
from gateway.protocol.events import (
    Data,
    EndStream,
    GoAway,
    PeerLimitsChanged,
    PingAcked,
    RequestHeaders,
    ResponseHeaders,
    StreamReset,
)
from gateway.protocol.h2_guard import FloodDetected
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead

OPTIONS = Http2ProtocolOptions()


class Pair:
    """A client codec and a server codec; `to_server()`/`to_client()` carry what one
    queued to the other and return the events it produced."""

    def __init__(self, options: Http2ProtocolOptions = OPTIONS) -> None:
        self.client = H2Codec(client_side=True, options=options, scheme="https")
        self.server = H2Codec(client_side=False, options=options, scheme="https")
        self.client.initiate()
        self.server.initiate()
        self.to_server()
        self.to_client()
        self.to_server()  # the SETTINGS acknowledgements

    def to_server(self) -> list[H2Event]:
        return self.server.receive_data(self.client.data_to_send())

    def to_client(self) -> list[H2Event]:
        return self.client.receive_data(self.server.data_to_send())


def request(path: str = "/", method: str = "GET", **headers: str) -> RequestHead:
    return RequestHead(
        method=method,
        path=path,
        authority="example.test",
        scheme="https",
        headers=HeaderMap(headers.items()),
        http_version="2",
    )


def without_limits(events: list[H2Event]) -> list[H2Event]:
    return [e for e in events if not isinstance(e, PeerLimitsChanged)]


def test_a_request_and_response_with_bodies_and_trailers():
    pair = Pair()
    stream_id = pair.client.next_stream_id()
    pair.client.send_request_head(
        stream_id, request("/upload", "POST", **{"content-length": "5"}), end_stream=False
    )
    assert pair.client.send_data(stream_id, memoryview(b"hello"), end_stream=True) == 5
    events = pair.to_server()
    assert [type(e) for e in events] == [RequestHeaders, Data, EndStream]
    head = events[0]
    assert isinstance(head, RequestHeaders)
    assert (head.head.method, head.head.path, head.head.authority) == (
        "POST",
        "/upload",
        "example.test",
    )
    assert (head.end_stream, head.content_length, head.head.http_version) == (False, 5, "2")
    assert events[1] == Data(stream_id, b"hello")
    assert events[2] == EndStream(stream_id, None)

    pair.server.send_response_head(
        stream_id, ResponseHead(200, HeaderMap([("x-a", "1")])), end_stream=False
    )
    pair.server.send_data(stream_id, memoryview(b"world"), end_stream=False)
    pair.server.send_trailers(stream_id, HeaderMap([("grpc-status", "0")]))
    events = without_limits(pair.to_client())
    assert [type(e) for e in events] == [ResponseHeaders, Data, EndStream]
    response = events[0]
    assert isinstance(response, ResponseHeaders)
    assert (response.head.status, response.head.headers.get("x-a")) == (200, "1")
    assert events[1] == Data(stream_id, b"world")
    end = events[2]
    assert isinstance(end, EndStream) and end.trailers is not None
    assert end.trailers.get("grpc-status") == "0"


def test_an_end_of_stream_on_the_headers_is_one_event():
    pair = Pair()
    stream_id = pair.client.next_stream_id()
    pair.client.send_request_head(stream_id, request(), end_stream=True)
    events = pair.to_server()
    assert len(events) == 1
    assert isinstance(events[0], RequestHeaders) and events[0].end_stream
    pair.server.send_response_head(stream_id, ResponseHead(204, HeaderMap()), end_stream=True)
    events = without_limits(pair.to_client())
    assert len(events) == 1
    assert isinstance(events[0], ResponseHeaders) and events[0].end_stream


def test_the_request_takes_the_connections_scheme_and_joins_split_cookies():
    pair = Pair()
    client = pair.client
    stream_id = client.next_stream_id()
    # A client may split cookies into several fields (RFC 9113 8.2.3); and claim any scheme.
    client._h2.send_headers(
        stream_id,
        [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"a.test"),
            (b":path", b"/"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
        ],
        end_stream=True,
    )
    (event,) = pair.to_server()
    assert isinstance(event, RequestHeaders)
    assert event.head.scheme == "https"  # the connection's, not the client's word
    assert event.head.headers.get("cookie") == "a=1; b=2"


def test_fields_http2_forbids_do_not_go_out_and_values_are_trimmed():
    pair = Pair()
    stream_id = pair.client.next_stream_id()
    head = request(
        host="other.test",
        connection="close",
        upgrade="websocket",
        **{"proxy-connection": "x", "keep-alive": "1", "transfer-encoding": "chunked"},
        te="gzip",
    )
    head.headers.add("x-keep", " 1\t")
    pair.client.send_request_head(stream_id, head, end_stream=True)
    (event,) = pair.to_server()  # h2's inbound validation on the server accepts it
    assert isinstance(event, RequestHeaders)
    assert list(event.head.headers) == [("x-keep", "1")]
    assert event.head.authority == "example.test"

    stream_id = pair.client.next_stream_id()
    pair.client.send_request_head(stream_id, request(te="trailers"), end_stream=True)
    (event,) = pair.to_server()
    assert isinstance(event, RequestHeaders)
    assert event.head.headers.get("te") == "trailers"


@pytest.mark.parametrize(
    ("name", "value"),
    [("x-a", "one\r\nx-b: two"), ("x-a", "nul\x00"), ("x a", "1"), (":path", "/x"), ("", "1")],
)
def test_a_field_http2_cannot_carry_is_refused_before_anything_is_queued(name, value):
    pair = Pair()
    stream_id = pair.client.next_stream_id()
    head = request()
    head.headers.add(name, value)
    with pytest.raises(ValueError, match="cannot be sent over HTTP/2"):
        pair.client.send_request_head(stream_id, head, end_stream=True)
    assert pair.to_server() == []


def test_credentials_and_short_cookies_stay_out_of_the_hpack_table():
    pair = Pair()
    stream_id = pair.client.next_stream_id()
    head = request(authorization="Bearer abc", cookie="id=1", **{"x-tenant": "blue"})
    head.headers.add("proxy-authorization", "Basic Zm9vOmJhcg==")
    head.headers.add("cookie", "session=" + "x" * 40)
    pair.client.send_request_head(stream_id, head, end_stream=True)
    (event,) = pair.to_server()
    assert isinstance(event, RequestHeaders)
    assert event.head.headers.get("authorization") == "Bearer abc"
    names = [name for name, _ in pair.client._h2.encoder.header_table.dynamic_entries]
    assert b"authorization" not in names
    assert b"proxy-authorization" not in names
    assert names.count(b"cookie") == 1  # the long one
    assert b"x-tenant" in names


def test_send_data_takes_only_what_the_window_allows_and_the_rest_after_a_credit():
    small = attrs.evolve(OPTIONS, initial_stream_window_size=65535)
    pair = Pair(small)
    stream_id = pair.client.next_stream_id()
    pair.client.send_request_head(stream_id, request(), end_stream=True)
    pair.to_server()
    pair.server.send_response_head(stream_id, ResponseHead(200, HeaderMap()), end_stream=False)
    body = memoryview(b"x" * 100_000)
    taken = pair.server.send_data(stream_id, body, end_stream=True)
    assert taken == 65535  # the client's stream window
    assert pair.server.send_data(stream_id, body[taken:], end_stream=True) == 0
    events = pair.to_client()
    received = sum(len(e.data) for e in events if isinstance(e, Data))
    assert received == 65535
    assert not any(isinstance(e, EndStream) for e in events)
    # Frames never exceed the peer's maximum frame size.
    assert sum(isinstance(e, Data) for e in events) == -(-65535 // 16384)

    pair.client.acknowledge(stream_id, received)
    assert PeerLimitsChanged() in pair.to_server()
    assert pair.server.send_data(stream_id, body[taken:], end_stream=True) == 100_000 - taken
    events = pair.to_client()
    assert sum(len(e.data) for e in events if isinstance(e, Data)) == 100_000 - taken
    assert events[-1] == EndStream(stream_id, None)


def test_padding_is_credited_at_once_and_data_only_when_acknowledged():
    # Smallest windows: h2 writes a WINDOW_UPDATE once half a window has been credited.
    small = attrs.evolve(
        OPTIONS, initial_stream_window_size=65535, initial_connection_window_size=65535
    )
    pair = Pair(small)
    stream_id = pair.client.next_stream_id()
    pair.client.send_request_head(stream_id, request(method="POST"), end_stream=False)
    pair.to_server()
    frame = hyperframe.frame.DataFrame(stream_id, data=b"x", pad_length=255)
    frame.flags.add("PADDED")
    events = pair.server.receive_data(frame.serialize() * 130)
    assert events == [Data(stream_id, b"x")] * 130
    # Each frame's padding and its length byte (256 bytes) are credited, not its data byte:
    # h2 writes the update when the credits reach half the window, at the 128th frame
    # (with the data credited too it would be the 128th as well, but 128 x 257 bytes).
    assert _window_updates(pair.server.data_to_send()) == {0: 128 * 256, stream_id: 128 * 256}
    pair.server.acknowledge(stream_id, 130)
    assert _window_updates(pair.server.data_to_send()) == {}  # batched by h2 until it counts


def _window_updates(data: bytes) -> dict[int, int]:
    credits: dict[int, int] = {}
    while data:
        frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        data = data[9 + length :]
        if isinstance(frame, hyperframe.frame.WindowUpdateFrame):
            credits[frame.stream_id] = credits.get(frame.stream_id, 0) + frame.window_increment
    return credits


def test_a_reset_is_an_event_and_a_send_on_the_stream_then_fails():
    pair = Pair()
    stream_id = pair.client.next_stream_id()
    pair.client.send_request_head(stream_id, request(method="POST"), end_stream=False)
    pair.to_server()
    pair.client.reset(stream_id, CANCEL)
    assert pair.to_server() == [StreamReset(stream_id, CANCEL)]
    with pytest.raises(StreamGone):
        pair.server.send_response_head(stream_id, ResponseHead(200, HeaderMap()), end_stream=True)
    with pytest.raises(StreamGone):
        pair.server.send_data(stream_id, memoryview(b"late"), end_stream=True)
    pair.server.reset(stream_id, CANCEL)  # resetting a reset stream is quietly nothing


def test_goaway_names_the_last_stream_and_ping_is_answered():
    pair = Pair()
    pair.client.ping(b"12345678")
    pair.to_server()
    assert pair.to_client() == [PingAcked()]
    assert pair.server.close(last_stream_id=7)
    assert pair.to_client() == [GoAway(7, 0)]
    assert pair.server.closed
    assert not pair.server.close()  # once closed, nothing more to say
    frame = hyperframe.frame.Frame.parse_frame_header(
        memoryview(H2Codec.goaway_frame(2**31 - 1)[:9])
    )[0]
    assert isinstance(frame, hyperframe.frame.GoAwayFrame)


def test_a_protocol_error_queues_a_goaway_and_raises():
    pair = Pair()
    # DATA on stream 0 is a connection error (RFC 9113 6.1).
    with pytest.raises(H2ConnectionError):
        pair.server.receive_data(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
    assert pair.server.closed
    assert GoAway(0, 1) in pair.to_client()  # PROTOCOL_ERROR


def test_a_server_judges_floods_a_client_does_not():
    pair = Pair()
    pings = b"".join(
        hyperframe.frame.PingFrame(0, opaque_data=b"%08d" % i).serialize() for i in range(1001)
    )
    # The acknowledgements are queued, never written: the peer is not reading them.
    with pytest.raises(FloodDetected) as caught:
        pair.server.receive_data(pings)
    assert caught.value.reason == "outbound_control_flood"
    assert pair.server.close(ENHANCE_YOUR_CALM, caught.value.reason.encode())
    assert pair.to_client()[-1] == GoAway(0, ENHANCE_YOUR_CALM)

    pair = Pair()
    assert pair.client.receive_data(pings) == []  # answered, not judged
    pair = Pair()
    for _ in range(3):  # read answers reset the count
        pair.server.receive_data(pings[: 900 * 17])
        pair.server.written()


def test_values_new_on_every_request_are_neither_indexed_nor_huffman_coded():
    pair = Pair()
    for n in range(3):
        request_id = f"{n:032x}"
        # grpc-timeout: the router forwards the time left, new on every call.
        fields = {"x-request-id": request_id, "grpc-timeout": f"{29_999_000 - n}u"}
        head = request(**fields, **{"x-tenant": "blue"})
        stream_id = pair.client.next_stream_id()
        pair.client.send_request_head(stream_id, head, end_stream=True)
        wire = pair.client.data_to_send()
        for value in fields.values():
            assert value.encode() in wire  # a plain literal, readable on the wire
        (event,) = pair.server.receive_data(wire)
        assert isinstance(event, RequestHeaders)
        assert event.head.headers.get("x-request-id") == request_id
    table = pair.client._h2.encoder.header_table
    names = [name for name, _ in table.dynamic_entries]
    assert b"x-request-id" not in names and b"grpc-timeout" not in names
    assert b"x-tenant" in names  # values that repeat are still indexed
