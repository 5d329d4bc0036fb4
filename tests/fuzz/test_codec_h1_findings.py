"""What fuzzing the HTTP/1.1 codecs against h11 found, each as its minimal repro.

Each test asserts the behaviour the codec should have. One that the codec still lacks is a
strict xfail, so a fix turns it into a failure (XPASS) that asks for the marker, and the
matching KNOWN FINDING entry in h1_oracle.py, to be removed; the others are fixed and stay
as regression tests.
"""

import pytest

from gateway.errors import DownstreamProtocolError, UpstreamReset
from gateway.protocol.codec_h1 import Http1Parser
from gateway.protocol.codec_h1_client import ClientCodec
from gateway.protocol.events import NEED_DATA, Data, EndStream, RequestHeaders
from gateway.protocol.headers import HeaderMap, RequestHead, ResponseHead, strip_trailer_fields
from tests.fuzz.h1_drivers import client_codec, server_codec

#: What `pytest.raises` raises when nothing was: the failure of a repro that expects an error.
DID_NOT_RAISE = pytest.fail.Exception


def request_head(data: bytes, parser: Http1Parser = "llhttp") -> RequestHead:
    codec = server_codec(parser)
    codec.receive_data(data)
    event = codec.next_event()
    assert isinstance(event, RequestHeaders)
    return event.head


def answer(codec: ClientCodec, data: bytes, method: str = "GET") -> list[object]:
    codec.send_request_head(RequestHead(method, "/", "up", "http", HeaderMap([("host", "up")])))
    codec.send_end()
    codec.receive_data(data)
    events = []
    while (event := codec.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, EndStream):
            break
    return events


_ON_LLHTTP = "llhttp knows a fixed list of methods"


@pytest.mark.parametrize(
    "parser",
    [
        pytest.param(
            "llhttp",
            marks=pytest.mark.xfail(strict=True, raises=DownstreamProtocolError, reason=_ON_LLHTTP),
        ),
        "h11",  # the fix, for those who choose it (`http1_parser = "h11"`)
    ],
)
def test_an_extension_method_is_a_request(parser: Http1Parser) -> None:
    # RFC 9110 9.1: a method is any token; h11 takes this request, the codec on llhttp
    # answers 400 "Invalid method encountered".
    head = request_head(b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n", parser)
    assert head.method == "FOO"


def test_a_cut_upgrade_request_body_is_an_error() -> None:
    # llhttp ends an upgrade (or CONNECT) request with its head, so when the client closes
    # in the middle of its Content-Length body the codec sees no message in progress and
    # says ConnectionEnded; h11, and the codec for any other request, say protocol error.
    codec = server_codec()
    codec.receive_data(
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 3\r\n\r\nab"
    )
    codec.receive_data(b"")
    events = [codec.next_event(), codec.next_event()]
    assert [type(e) for e in events] == [RequestHeaders, Data]
    with pytest.raises(DownstreamProtocolError):
        codec.next_event()


def test_a_status_below_100_is_an_upstream_error() -> None:
    # The codec relays status 0 (the client is sent `HTTP/1.1 0 X`) and, taking it for an
    # interim response, never ends it: the next response's head comes in its middle.
    # RFC 9110 15 calls such a status invalid; h11 refuses it.
    with pytest.raises(UpstreamReset):
        answer(client_codec(), b"HTTP/1.1 000 X\r\nContent-Length: 2\r\n\r\nok")


def test_a_reason_phrase_with_nul_is_an_upstream_error() -> None:
    # RFC 9112 4: a reason phrase is HTAB, SP, visible characters and obs-text; the server
    # codec writes the upstream's reason to the client as it came.
    with pytest.raises(UpstreamReset):
        answer(client_codec(), b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n")


def test_a_response_coding_other_than_chunked_is_an_error() -> None:
    # The server codec refuses a Transfer-Encoding other than exactly `chunked`; the client
    # codec un-chunks `gzip, chunked` and relays the gzip bytes as the body (Transfer-
    # Encoding is hop-by-hop, so nothing tells the client they are compressed). h11
    # refuses it.
    with pytest.raises(UpstreamReset):
        answer(
            client_codec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )


def test_a_chunked_response_with_a_tab_after_chunked_is_an_error() -> None:
    # llhttp does not take `chunked<HTAB>` for chunked (RFC 9110 5.5: the HTAB is not part
    # of the value; h11 drops it) and would read the body until the close: the client
    # would be sent the chunk framing as body bytes. It is refused instead (502).
    with pytest.raises(UpstreamReset):
        answer(
            client_codec(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        )


def test_an_unsolicited_101_is_an_error() -> None:
    # A 101 to a request that did not ask to upgrade: the codec stops parsing, the router
    # relays the 101 as an ordinary response (with a chunked body) and then waits for body
    # events that never come, even after the upstream closes, until the route timeout.
    # h11 refuses it.
    with pytest.raises(UpstreamReset):
        answer(
            client_codec(),
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
        )


def test_an_error_parsed_ahead_does_not_drop_the_requests_before_it() -> None:
    # Three pipelined requests in one read, the last one bad: llhttp parses all three at
    # once, the error stops the parser, and `reusable` (not stopped) is False after the
    # first exchange, so the connection closes and the second, valid, request is never
    # answered. Sent in separate reads, both valid requests get their 200 (checked over a
    # real socket against direct_response routes). An upgrade or CONNECT request in place
    # of the bad one drops the second request the same way.
    codec = server_codec()
    good = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    codec.receive_data(good + good + b"get / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(codec.next_event(), RequestHeaders)
    head = ResponseHead(200, HeaderMap([("content-length", "0")]))
    codec.send_response_head(head, request_method="GET")
    codec.send_end()
    assert codec.reusable


@pytest.mark.parametrize("parser", ["llhttp", "h11"])
def test_a_transfer_encoding_trailer_is_not_relayed(parser: Http1Parser) -> None:
    # RFC 9110 6.5.1: framing fields are not trailers. The llhttp codec takes one in a
    # response (llhttp refuses one in a request) and the gateway used to write it to the
    # client's trailer section (`0\r\ntransfer-encoding: chunked\r\n\r\n`). Every trailer
    # section, from either codec, now passes through `strip_trailer_fields` before the
    # filters see it (http/active_stream.py; tests/e2e/test_trailer_hygiene.py relays one).
    # The h11 parser refuses the section as a whole: the body still ends, without any
    # trailers, and the connection is not reused (ClientCodec._stop).
    events = answer(
        client_codec(parser),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\nTransfer-Encoding: chunked\r\nX-Checksum: abc\r\n\r\n",
    )
    end = events[-1]
    assert isinstance(end, EndStream)
    if parser == "h11":
        assert end.trailers is None
        return
    assert end.trailers is not None
    strip_trailer_fields(end.trailers)
    assert list(end.trailers) == [("x-checksum", "abc")]
