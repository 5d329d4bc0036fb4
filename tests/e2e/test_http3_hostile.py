"""HTTP/3 against hostile clients, each attack run next to a bystander client that must
be served as if nothing happened: rapid stream resets, a body pushed at an upstream that
does not read, an oversized header block, a garbage and Initial flood, a spoofed Initial
(the anti-amplification limit), and Retry's address validation.

The attackers are aioquic's sans-IO QUIC and HTTP/3 driven by the test over a trio UDP
socket (tests/h3_raw_client.py), so each can do what a polite client library would not."""

import os
import socket

import trio
import trio.lowlevel
from aioquic.h3.connection import H3_ALPN, ErrorCode, encode_frame
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import StreamReset

from tests.config_builder import ConfigBuilder, proxy_config
from tests.h3_clients import H3Peer, H3Request, h3_request
from tests.h3_raw_client import RawH3Client
from tests.helpers import eventually, run_gateway, start_upstream
from tests.tls_helpers import CertFiles, Pki

WINDOW = 256 * 1024


def quic_config(upstream: int, cert: CertFiles, **quic: object) -> ConfigBuilder:
    config = proxy_config(upstream)
    config.listener(
        "h3", protocol="quic", virtual_hosts=["main"], quic={"certificates": [cert.table()], **quic}
    )
    return config


async def bystander(gw, pki: Pki) -> None:
    r = await h3_request(H3Peer(gw.listener_ports["h3"], pki.ca_file), H3Request(path="/ok"))
    assert r.status == 200


async def test_rapid_reset_closes_the_attacker_only(nursery, pki, cert):
    up = await start_upstream(nursery)
    async with run_gateway(quic_config(up.port, cert, max_stream_resets_per_second=50)) as gw:
        attacker = RawH3Client(gw.listener_ports["h3"], pki.ca_file)
        await attacker.connect()
        for i in range(300):
            sid = attacker.request("/hang")
            attacker.quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
            if i % 20 == 19:
                await attacker.pump(quiet=0.0)
        await attacker.pump(until=lambda: attacker.closed is not None, quiet=2)
        assert attacker.closed is not None
        assert attacker.closed.error_code == ErrorCode.H3_EXCESSIVE_LOAD
        assert gw.stats.value("http.h3.downstream_cx_rapid_reset") == 1
        await bystander(gw, pki)
        await eventually(lambda: gw.stats.value("http.h3.downstream_rq_active") == 0, 5)


async def test_streams_a_client_reset_give_back_their_credit(nursery, pki, cert):
    """A QUIC stream closes each way on its own: the gateway resets its side of a stream
    the client reset, so the stream ends and the client may open another. Half open, 100
    resets would use up the client's MAX_STREAMS for the life of the connection."""
    up = await start_upstream(nursery)
    config = quic_config(up.port, cert, max_concurrent_streams=20)
    async with run_gateway(config) as gw:
        client = RawH3Client(gw.listener_ports["h3"], pki.ca_file)
        await client.connect()
        for _ in range(3):
            # Requests whose bodies are still coming: the client resets its sending side.
            opened = [client.request("/hang", end=False) for _ in range(20)]
            await client.pump(quiet=0.3)
            await eventually(lambda: gw.stats.value("http.h3.downstream_rq_active") == 20, 5)
            for sid in opened:
                client.quic.reset_stream(sid, ErrorCode.H3_REQUEST_CANCELLED)
            await client.pump(quiet=0.3)
        last = client.request("/ok")
        await client.pump(
            until=lambda: any(
                isinstance(e, HeadersReceived) and e.stream_id == last for e in client.h3_events
            ),
            quiet=3,
        )
        (head,) = [e for e in client.h3_events if isinstance(e, HeadersReceived)]
        assert dict(head.headers)[b":status"] == b"200"


async def test_a_body_for_an_upstream_that_does_not_read_is_held_to_the_window(nursery, pki, cert):
    """The upstream accepts and never reads: the gateway takes no more of the body than
    the stream window past what it forwarded (what the kernel's socket buffers took)."""
    stalled: list[trio.SocketStream] = []

    async def never_read(stream: trio.SocketStream) -> None:
        stalled.append(stream)
        await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, never_read, listeners)
    up = await start_upstream(nursery)
    config = quic_config(listeners[0].socket.getsockname()[1], cert)
    config.listener("h3")["quic"]["initial_stream_window_size"] = WINDOW
    config.cluster("ok", up.port)
    config.routes("main").insert(0, {"match": {"path": "/ok"}, "cluster": "ok"})
    async with run_gateway(config) as gw:
        attacker = RawH3Client(gw.listener_ports["h3"], pki.ca_file)
        await attacker.connect()
        sid = attacker.request("/upload", end=False)
        attacker.h3.send_data(sid, b"b" * (64 << 20), end_stream=True)
        for _ in range(10):
            await attacker.pump(quiet=0.2)
        stream = attacker.quic._streams.get(sid)  # gone once all of it was sent
        granted = stream.sender.highest_offset if stream is not None else 64 << 20
        sock = stalled[0].socket
        kernel = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) + 4 * (1 << 20)
        assert WINDOW <= granted <= WINDOW + kernel
        await bystander(gw, pki)


async def test_an_oversized_header_block_resets_the_stream(nursery, pki, cert):
    up = await start_upstream(nursery)
    config = quic_config(up.port, cert)
    config.listener("h3")["max_request_headers_kb"] = 8
    async with run_gateway(config) as gw:
        attacker = RawH3Client(gw.listener_ports["h3"], pki.ca_file)
        await attacker.connect()
        sid = attacker.quic.get_next_available_stream_id()
        # A HEADERS frame announcing 4 MiB, and 64 KiB of it.
        attacker.quic.send_stream_data(sid, encode_frame(0x1, b"\x00" * (4 << 20))[: 64 << 10])
        await attacker.pump(
            until=lambda: any(isinstance(e, StreamReset) for e in attacker.events), quiet=2
        )
        resets = [e for e in attacker.events if isinstance(e, StreamReset)]
        assert [(r.stream_id, r.error_code) for r in resets] == [(sid, ErrorCode.H3_EXCESSIVE_LOAD)]
        await bystander(gw, pki)


async def test_a_datagram_flood_drops_datagrams_not_bystanders(nursery, pki, cert):
    up = await start_upstream(nursery)
    async with run_gateway(quic_config(up.port, cert)) as gw:
        port = gw.listener_ports["h3"]
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))

        async def flood() -> None:
            for i in range(3000):
                # Short headers for no connection, and garbage "Initials" too small to be.
                junk = (b"\x40" if i % 2 else b"\xc0\x00\x00\x00\x01") + os.urandom(100)
                await sock.sendto(junk, ("127.0.0.1", port))
                if i % 100 == 0:
                    await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as attack:
            attack.start_soon(flood)
            await bystander(gw, pki)
        await eventually(lambda: gw.stats.value("listener.h3.quic.datagrams_dropped") > 1000)
        assert gw.stats.value("listener.h3.downstream_cx_total") == 1  # the bystander's
        await bystander(gw, pki)


async def test_a_spoofed_initial_gets_at_most_three_times_its_size(nursery, pki, cert):
    """An Initial from an address that never answers (a spoofed source): before the
    client's address is validated, QUIC may send it no more than three times what it
    received (RFC 9000 8.1), retransmissions included."""
    up = await start_upstream(nursery)
    async with run_gateway(quic_config(up.port, cert)) as gw:
        client = QuicConnection(
            configuration=QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
        )
        client.connect(("127.0.0.1", gw.listener_ports["h3"]), now=trio.current_time())
        sent = client.datagrams_to_send(now=trio.current_time())
        victim = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await victim.bind(("127.0.0.1", 0))
        for data, addr in sent:
            await victim.sendto(data, addr)
        received = 0
        with trio.move_on_after(3):  # several probe timeouts
            while True:
                data, _ = await victim.recvfrom(65536)
                received += len(data)
        assert 0 < received <= 3 * sum(len(d) for d, _ in sent)
        await bystander(gw, pki)


async def test_retry_validates_addresses_first(nursery, pki, cert):
    up = await start_upstream(nursery)
    async with run_gateway(quic_config(up.port, cert, retry=True)) as gw:
        await bystander(gw, pki)  # aioquic's client follows the Retry
        assert gw.stats.value("listener.h3.quic.retry_sent") == 1
        # An Initial with no token gets a Retry, never a handshake (no connection).
        client = QuicConnection(
            configuration=QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
        )
        client.connect(("127.0.0.1", gw.listener_ports["h3"]), now=trio.current_time())
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        for data, addr in client.datagrams_to_send(now=trio.current_time()):
            await sock.sendto(data, addr)
        with trio.fail_after(2):
            reply, _ = await sock.recvfrom(65536)
        assert reply[0] & 0xF0 == 0xF0  # long header, type Retry
        assert gw.stats.value("listener.h3.quic.retry_sent") == 2
        assert gw.stats.value("listener.h3.downstream_cx_total") == 1
