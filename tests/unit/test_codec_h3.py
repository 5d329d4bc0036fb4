"""The HTTP/3 codec and the QUIC dispatcher without sockets: aioquic's own client (QUIC and
HTTP/3) wired to the gateway's server codec, datagrams handed across by the test, time
given by the test. What the codec promises its connection: requests as the gateway's
events, responses with trailers, windows that open only as bytes are forwarded, bounded
send buffers, a cap on what HTTP/3 buffers whole, and GOAWAY."""

import pytest
import trustme
from aioquic.h3.connection import H3_ALPN, H3Connection, encode_frame
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamReset as QuicStreamReset
from aioquic.quic.packet import QuicProtocolVersion

from gateway.config.model import QuicProtocolOptions
from gateway.protocol.codec_h3 import (
    H3_EXCESSIVE_LOAD,
    SEND_BUFFER,
    ConnectionClosed,
    H3Codec,
    HandshakeDone,
    error_code_name,
)
from gateway.protocol.codec_h3 import (
    H3Event as GatewayEvent,
)
from gateway.protocol.events import Data, EndStream, RequestHeaders
from gateway.protocol.headers import HeaderMap, ResponseHead
from gateway.protocol.quic_dispatch import Accept, Deliver, Drop, QuicDispatcher, Reply

CLIENT_ADDR = ("127.0.0.1", 50000)
SERVER_ADDR = ("127.0.0.1", 443)
WINDOW = 256 * 1024


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    directory = tmp_path_factory.mktemp("h3")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    chain, key, ca_file = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    chain.write_bytes(b"".join(b.bytes() for b in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    return str(chain), str(key), str(ca_file)


class Pair:
    """A client (aioquic) and a server (the gateway's codec) joined by the test."""

    def __init__(self, certificate: tuple[str, str, str], **options: int) -> None:
        chain, key, ca_file = certificate
        server_config = QuicConfiguration(is_client=False, alpn_protocols=["h3"])
        server_config.load_cert_chain(chain, key)
        opts = QuicProtocolOptions(
            initial_stream_window_size=options.get("stream_window", WINDOW),
            initial_connection_window_size=options.get("connection_window", 4 * WINDOW),
        )
        client_config = QuicConfiguration(
            is_client=True, alpn_protocols=H3_ALPN, server_name="localhost"
        )
        client_config.load_verify_locations(ca_file)
        # Big client-side windows: what the server lets in is the server's business.
        client_config.max_data = client_config.max_stream_data = 64 << 20
        self.client = QuicConnection(configuration=client_config)
        self.now = 0.0
        self.client.connect(SERVER_ADDR, now=self.now)
        first = self.client.datagrams_to_send(self.now)
        odcid = self.client.original_destination_connection_id
        self.server = H3Codec(
            configuration=server_config,
            original_destination_connection_id=odcid,
            retry_source_connection_id=None,
            options=opts,
            max_header_bytes=options.get("max_header_bytes", 16 * 1024),
        )
        self.h3 = H3Connection(self.client)
        self.server_events: list[GatewayEvent] = []
        self.client_events: list[H3Event] = []
        for data, _ in first:
            self.server_events += self.server.receive_datagram(data, CLIENT_ADDR, self.now)
        self.pump()

    def pump(self, *, to_client: bool = True, rounds: int = 200) -> None:
        """Moves datagrams both ways until neither side has any (or the server's go
        nowhere, with `to_client` False: a client that stopped reading)."""
        for _ in range(rounds):
            self.now += 0.001
            moved = False
            for data, _ in self.client.datagrams_to_send(self.now):
                moved = True
                self.server_events += self.server.receive_datagram(data, CLIENT_ADDR, self.now)
            for data, _ in self.server.datagrams_to_send(self.now):
                moved = True
                if to_client:
                    self.client.receive_datagram(data, SERVER_ADDR, self.now)
            while (event := self.client.next_event()) is not None:
                self.client_events += self.h3.handle_event(event)
                if isinstance(event, QuicStreamReset):
                    self.client_events.append(event)  # type: ignore[arg-type]
            if not moved:
                return

    def request(self, path: str = "/", *, body: bytes = b"", end: bool = True) -> int:
        sid = self.client.get_next_available_stream_id()
        head = [
            (b":method", b"POST" if body else b"GET"),
            (b":scheme", b"https"),
            (b":authority", b"localhost"),
            (b":path", path.encode()),
        ]
        self.h3.send_headers(sid, head, end_stream=end and not body)
        if body:
            self.h3.send_data(sid, body, end_stream=end)
        return sid

    def delivered(self, sid: int) -> int:
        return sum(
            len(e.data) for e in self.server_events if isinstance(e, Data) and e.stream_id == sid
        )


def test_a_request_and_a_response_with_trailers(certificate):
    pair = Pair(certificate)
    assert [e for e in pair.server_events if isinstance(e, HandshakeDone)] == [HandshakeDone(1)]
    sid = pair.request("/hello?x=1")
    pair.pump()
    (request,) = [e for e in pair.server_events if isinstance(e, RequestHeaders)]
    assert (request.stream_id, request.end_stream) == (sid, True)
    assert (request.head.method, request.head.path, request.head.http_version) == (
        "GET",
        "/hello?x=1",
        "3",
    )
    assert request.head.scheme == "https" and request.head.authority == "localhost"
    pair.server.send_response_head(
        sid, ResponseHead(200, HeaderMap([("x-a", "1")])), end_stream=False
    )
    assert pair.server.send_data(sid, memoryview(b"body"), end_stream=False) == 4
    pair.server.send_trailers(sid, HeaderMap([("grpc-status", "0")]))
    pair.pump()
    heads = [e for e in pair.client_events if isinstance(e, HeadersReceived)]
    assert heads[0].headers[:2] == [(b":status", b"200"), (b"x-a", b"1")]
    assert heads[1].headers == [(b"grpc-status", b"0")] and heads[1].stream_ended
    assert b"".join(e.data for e in pair.client_events if isinstance(e, DataReceived)) == b"body"


def test_request_trailers_end_the_stream(certificate):
    pair = Pair(certificate)
    sid = pair.request(body=b"abc", end=False)
    pair.h3.send_headers(sid, [(b"x-checksum", b"1")], end_stream=True)
    pair.pump()
    ends = [e for e in pair.server_events if isinstance(e, EndStream)]
    assert [(e.stream_id, e.trailers and list(e.trailers)) for e in ends] == [
        (sid, [("x-checksum", "1")])
    ]
    assert pair.delivered(sid) == 3


def test_the_stream_window_opens_only_as_bytes_are_forwarded(certificate):
    """aioquic alone doubles a window once half was received, read or not: a client
    could park any amount behind a slow upstream. Here it gets the window past what was
    forwarded, and no more."""
    pair = Pair(certificate)
    sid = pair.request(body=b"x" * (8 * WINDOW), end=True)
    pair.pump()
    held = pair.delivered(sid)
    assert WINDOW // 2 <= held <= WINDOW
    for _ in range(3):
        pair.pump()
    assert pair.delivered(sid) == held  # nothing credited: nothing more came
    pair.server.acknowledge(sid, held)
    pair.pump()
    assert held < pair.delivered(sid) <= 2 * WINDOW


def test_the_connection_window_bounds_all_streams_together(certificate):
    pair = Pair(certificate, stream_window=WINDOW, connection_window=2 * WINDOW)
    sids = [pair.request(f"/{i}", body=b"x" * WINDOW) for i in range(6)]
    pair.pump()
    total = sum(pair.delivered(sid) for sid in sids)
    assert total <= 2 * WINDOW
    for sid in sids:
        pair.server.acknowledge(sid, pair.delivered(sid))
    pair.pump()
    assert sum(pair.delivered(sid) for sid in sids) > total


def test_sends_stop_at_the_stream_buffer_until_the_client_acknowledges(certificate):
    pair = Pair(certificate)
    sid = pair.request()
    pair.pump()
    pair.server.send_response_head(sid, ResponseHead(200, HeaderMap()), end_stream=False)
    body = memoryview(b"y" * (4 * SEND_BUFFER))
    taken = pair.server.send_data(sid, body, end_stream=True)
    assert SEND_BUFFER - 64 < taken <= SEND_BUFFER  # the HEADERS frame took a few bytes
    assert pair.server.send_data(sid, body[taken:], end_stream=True) == 0
    pair.pump(to_client=False)  # sent, never acknowledged
    assert pair.server.send_data(sid, body[taken:], end_stream=True) == 0
    for _ in range(20):  # the server resends what was lost; the client acknowledges
        timer = pair.server.timer()
        assert timer is not None
        pair.now = max(pair.now, timer)
        pair.server_events += pair.server.handle_timer(pair.now)
        pair.pump()
        if pair.server.send_buffered(sid) < SEND_BUFFER:
            break
    assert pair.server.send_data(sid, body[taken:], end_stream=True) > 0


def test_a_header_block_past_the_limit_resets_the_stream(certificate):
    """HTTP/3 holds a HEADERS frame whole until it is complete; its bytes were credited as
    they reached HTTP/3, so without a cap a client could park any amount there."""
    pair = Pair(certificate, max_header_bytes=4096)
    sid = pair.client.get_next_available_stream_id()
    # A HEADERS frame that says it is 1 MiB long, and 64 KiB of it.
    frame = encode_frame(0x1, b"\x00" * (1 << 20))[: 64 * 1024]
    pair.client.send_stream_data(sid, frame)
    pair.pump()
    resets = [e for e in pair.client_events if isinstance(e, QuicStreamReset)]
    assert [(r.stream_id, r.error_code) for r in resets] == [(sid, H3_EXCESSIVE_LOAD)]
    other = pair.request("/bystander")
    pair.pump()
    assert any(isinstance(e, RequestHeaders) and e.stream_id == other for e in pair.server_events)


def test_goaway_and_close(certificate):
    pair = Pair(certificate)
    sid = pair.request()
    pair.pump()
    pair.server.goaway(pair.server.next_request_stream_id())
    pair.pump()
    assert pair.server.next_request_stream_id() == sid + 4
    pair.server.close()
    pair.pump()
    pair.now += 10
    pair.server_events += pair.server.handle_timer(pair.now)
    assert pair.server.closed and pair.server.ended
    closed = [e for e in pair.server_events if isinstance(e, ConnectionClosed)]
    assert closed and not closed[0].by_peer


def test_a_peers_close_is_told_apart_from_ours(certificate):
    pair = Pair(certificate)
    pair.client.close(error_code=0x100, reason_phrase="bye")  # H3_NO_ERROR
    pair.pump()
    pair.now += 10
    pair.server_events += pair.server.handle_timer(pair.now)
    (closed,) = [e for e in pair.server_events if isinstance(e, ConnectionClosed)]
    assert closed.by_peer and closed.error_name == "H3_NO_ERROR"
    assert error_code_name(0x100, application=False) == "CRYPTO_ERROR"
    assert error_code_name(0, application=False) == "NO_ERROR"
    assert error_code_name(0x1F0000, application=True) == "0x1f0000"


# -- the dispatcher ----------------------------------------------------------------------


def _initial(certificate: tuple[str, str, str], token: bytes = b"") -> tuple[QuicConnection, bytes]:
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="localhost")
    config.token = token
    client = QuicConnection(configuration=config)
    client.connect(SERVER_ADDR, now=0.0)
    ((data, _),) = client.datagrams_to_send(0.0)
    return client, data


def test_the_dispatcher_accepts_an_initial_and_routes_by_connection_id(certificate):
    dispatcher: QuicDispatcher[str] = QuicDispatcher(
        connection_id_length=8, supported_versions=[QuicProtocolVersion.VERSION_1], retry=False
    )
    client, data = _initial(certificate)
    accept = dispatcher.classify(data, CLIENT_ADDR, 0.0)
    assert isinstance(accept, Accept) and accept.retry_source_connection_id is None
    assert accept.original_destination_connection_id == client.original_destination_connection_id
    dispatcher.route(accept.original_destination_connection_id, "conn")
    # The same id from another address (the client moved): the same connection.
    assert dispatcher.classify(data, ("10.0.0.9", 1), 0.0) == Deliver("conn")
    assert dispatcher.classify(data[:1000], CLIENT_ADDR, 0.0) == Deliver("conn")
    dispatcher.unroute(accept.original_destination_connection_id, "conn")
    # A short Initial for no connection is dropped: answering would amplify.
    assert isinstance(dispatcher.classify(data[:1000], CLIENT_ADDR, 0.0), Drop)
    assert isinstance(dispatcher.classify(b"\x40garbage", CLIENT_ADDR, 0.0), Drop)


def test_the_dispatcher_negotiates_versions_and_sends_retry(certificate):
    dispatcher: QuicDispatcher[str] = QuicDispatcher(
        connection_id_length=8, supported_versions=[QuicProtocolVersion.VERSION_2], retry=True
    )
    _, data = _initial(certificate)
    negotiation = dispatcher.classify(data, CLIENT_ADDR, 0.0)
    assert isinstance(negotiation, Reply) and negotiation.kind == "version_negotiation"
    dispatcher = QuicDispatcher(
        connection_id_length=8, supported_versions=[QuicProtocolVersion.VERSION_1], retry=True
    )
    client, data = _initial(certificate)
    retry = dispatcher.classify(data, CLIENT_ADDR, 0.0)
    assert isinstance(retry, Reply) and retry.kind == "retry"
    client.receive_datagram(retry.datagram, SERVER_ADDR, now=0.1)
    ((again, _),) = client.datagrams_to_send(0.1)
    accept = dispatcher.classify(again, CLIENT_ADDR, 0.1)
    assert isinstance(accept, Accept)
    assert accept.original_destination_connection_id == client.original_destination_connection_id
    assert accept.retry_source_connection_id is not None
    # The token is bound to the address: a spoofed source cannot reuse it.
    assert isinstance(dispatcher.classify(again, ("10.0.0.9", 1), 0.1), Drop)
    # And it expires.
    assert isinstance(dispatcher.classify(again, CLIENT_ADDR, 100.0), Drop)
