"""Trailer sections carry only what may be a trailer (RFC 9110 6.5.1): the framing,
routing and connection fields an upstream or a client puts there are dropped on the way
through, both ways and over both protocols, while the other trailers, and other clients'
requests, go on as before."""

import contextlib
import re

import h2.config
import h2.connection
import h2.events
import httpx
import pytest
import trio

from tests.config_builder import proxy_config
from tests.helpers import RawH2Client, raw_exchange, run_gateway, url

_FINE = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine"
#: A chunked body's end: the last chunk, the trailer lines, the empty line.
_CHUNKED_END = re.compile(rb"(?:^|\r\n)0\r\n(?:[^\r\n]+\r\n)*\r\n")
#: What may not be a trailer, as upstreams and clients here send it (names as sent).
_FRAMING = [("Content-Length", "0"), ("Host", "elsewhere"), ("Trailer", "X-Checksum")]
_GET_TRAILERS = b"GET /trailers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def chunked_answer(*trailers: tuple[str, str]) -> bytes:
    """A chunked "hello" whose trailer section is `trailers`, then `X-Checksum: abc`."""
    lines = b"".join(f"{n}: {v}\r\n".encode() for n, v in [*trailers, ("X-Checksum", "abc")])
    return (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
        + lines
        + b"\r\n"
    )


class TrailerUpstream:
    """A keep-alive raw-socket HTTP/1.1 upstream: `/trailers` is answered with `answer`,
    anything else with "fine". It records each request as it arrived, trailers included."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.port = 0
        self.requests: list[bytes] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                while True:
                    while b"\r\n\r\n" not in buffer:
                        if not (data := await stream.receive_some(65536)):
                            return
                        buffer += data
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    request = head + b"\r\n\r\n"
                    if b"transfer-encoding: chunked" in head.lower():
                        while (end := _CHUNKED_END.search(buffer)) is None:
                            if not (data := await stream.receive_some(65536)):
                                return
                            buffer += data
                        request, buffer = request + buffer[: end.end()], buffer[end.end() :]
                    self.requests.append(request)
                    path = head.split(b" ")[1]
                    await stream.send_all(self.answer if path == b"/trailers" else _FINE)


class H2TrailerUpstream:
    """An HTTP/2 upstream (h2 over trio): `/trailers` gets "hello" and then `trailers`
    plus `x-checksum: abc`; anything else gets "fine"."""

    def __init__(self, trailers: list[tuple[str, str]]) -> None:
        self.trailers = [(n.lower(), v) for n, v in trailers] + [("x-checksum", "abc")]
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(conn.data_to_send())
                while data := await stream.receive_some(65536):
                    for event in conn.receive_data(data):
                        if isinstance(event, h2.events.RequestReceived):
                            sid = event.stream_id
                            conn.send_headers(sid, [(":status", "200")])
                            if dict(event.headers)[b":path"] == b"/trailers":
                                conn.send_data(sid, b"hello")
                                conn.send_headers(sid, self.trailers, end_stream=True)
                            else:
                                conn.send_data(sid, b"fine", end_stream=True)
                    await stream.send_all(conn.data_to_send())


async def serve(nursery: trio.Nursery, upstream: TrailerUpstream | H2TrailerUpstream) -> int:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    nursery.start_soon(trio.serve_listeners, upstream.handle, listeners)
    upstream.port = listeners[0].socket.getsockname()[1]
    return upstream.port


async def bystander(port: int, done: trio.Event, answers: list[bytes]) -> None:
    """Another client's keep-alive connection, asking for /fine until `done`."""
    async with httpx.AsyncClient() as client:
        while not done.is_set():
            r = await client.get(f"http://127.0.0.1:{port}/fine")
            answers.append(r.content)
            await trio.sleep(0.005)


def trailer_section(message: bytes) -> bytes:
    """The trailer lines of a chunked HTTP/1.1 message (between its last chunk and the
    empty line), lower-cased."""
    match = re.search(rb"\r\n0\r\n((?:[^\r\n]+\r\n)*)\r\n$", message)
    assert match is not None, message
    return match[1].lower()


async def h2_exchange(port: int, path: str) -> list[h2.events.Event]:
    """A GET over HTTP/2 (prior knowledge), read until its stream ends or is reset."""
    client = await RawH2Client.connect(port)
    async with client.stream:
        client.request(path)
        await client.flush()
        return await client.read_until(
            lambda e: isinstance(e, h2.events.StreamEnded | h2.events.StreamReset)
        )


def h2_outcome(events: list[h2.events.Event]) -> tuple[bytes, list[tuple[bytes, bytes]], bool]:
    """The body, the trailers and whether the stream ended cleanly."""
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    trailers = [h for e in events if isinstance(e, h2.events.TrailersReceived) for h in e.headers]
    return body, trailers, isinstance(events[-1], h2.events.StreamEnded)


async def check_every_client_gets_only_the_checksum(port: int) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.get(f"http://127.0.0.1:{port}/trailers")
        assert (r.status_code, r.content) == (200, b"hello")

    raw = await raw_exchange(port, _GET_TRAILERS)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert trailer_section(raw) == b"x-checksum: abc\r\n"

    # curl -i writes the trailers it read after the body.
    curl = await trio.run_process(
        ["curl", "-sS", "-i", f"http://127.0.0.1:{port}/trailers"], capture_stdout=True
    )
    assert curl.stdout.lower().endswith(b"\r\n\r\nhellox-checksum: abc\r\n"), curl.stdout

    assert h2_outcome(await h2_exchange(port, "/trailers")) == (
        b"hello",
        [(b"x-checksum", b"abc")],
        True,
    )


@pytest.mark.parametrize(
    ("protocol", "trailers"),
    [
        ("http1", [("Transfer-Encoding", "chunked"), ("Host", "elsewhere"), ("Trailer", "x")]),
        ("http2", [*_FRAMING]),
    ],
)
async def test_framing_trailers_from_an_upstream_are_dropped(nursery, protocol, trailers):
    if protocol == "http1":
        port = await serve(nursery, TrailerUpstream(chunked_answer(*trailers)))
    else:
        port = await serve(nursery, H2TrailerUpstream(trailers))
    # One upstream connection: whatever the answer did to it, the bystander shares it.
    config = proxy_config(port, cluster={"protocol": protocol, "max_connections_per_host": 1})
    async with run_gateway(config) as gw:
        done, answers = trio.Event(), []
        async with trio.open_nursery() as clients:
            clients.start_soon(bystander, gw.listener_ports["edge"], done, answers)
            await check_every_client_gets_only_the_checksum(gw.listener_ports["edge"])
            done.set()
    assert answers and set(answers) == {b"fine"}


@pytest.mark.parametrize("parser", ["llhttp", "h11"])
async def test_a_content_length_trailer_from_an_http1_upstream_loses_the_trailers(nursery, parser):
    # Both parsers refuse a framing field in a trailer section as an error of the whole
    # message, after its head and body were read. The client gets the body, ended without
    # trailers (the client used to get nothing: the connection closed under the held-back
    # head); the upstream connection is counted as a protocol error and never reused.
    port = await serve(nursery, TrailerUpstream(chunked_answer(("Content-Length", "0"))))
    config = proxy_config(port, cluster={"max_connections_per_host": 1, "http1_parser": parser})
    async with run_gateway(config) as gw:
        done, answers = trio.Event(), []
        async with trio.open_nursery() as clients:
            clients.start_soon(bystander, gw.listener_ports["edge"], done, answers)
            raw = await raw_exchange(gw.listener_ports["edge"], _GET_TRAILERS)
            assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"5\r\nhello\r\n0\r\n\r\n")
            events = await h2_exchange(gw.listener_ports["edge"], "/trailers")
            assert h2_outcome(events) == (b"hello", [], True)
            async with httpx.AsyncClient() as client:
                r = await client.get(url(gw, "/trailers"))
                assert (r.status_code, r.content) == (200, b"hello")
            done.set()
        assert gw.stats.value("cluster.backend.upstream_cx_protocol_error") == 3
    assert answers and set(answers) == {b"fine"}


async def test_only_framing_trailers_end_the_body_without_trailers(nursery):
    up = H2TrailerUpstream(_FRAMING)
    up.trailers = up.trailers[:-1]  # no checksum: nothing that may be a trailer
    port = await serve(nursery, up)
    async with run_gateway(proxy_config(port, cluster={"protocol": "http2"})) as gw:
        raw = await raw_exchange(gw.listener_ports["edge"], _GET_TRAILERS)
        assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"5\r\nhello\r\n0\r\n\r\n")
        events = await h2_exchange(gw.listener_ports["edge"], "/trailers")
        assert h2_outcome(events) == (b"hello", [], True)


async def test_request_trailers_lose_what_may_not_be_a_trailer(nursery):
    up = TrailerUpstream(_FINE)
    async with run_gateway(proxy_config(await serve(nursery, up))) as gw:
        port = gw.listener_ports["edge"]
        raw = await raw_exchange(
            port,
            b"POST /h1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\nHost: elsewhere\r\n"
            b"Trailer: X-Sum\r\nKeep-Alive: 5\r\nConnection: X-Hidden\r\nX-Hidden: 1\r\n"
            b"X-Sum: 1\r\n\r\n",
        )
        assert raw.startswith(b"HTTP/1.1 200 ")

        client = await RawH2Client.connect(port)
        async with client.stream:
            sid = client.conn.get_next_available_stream_id()
            head = [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", "/h2")]
            client.conn.send_headers(sid, head)
            client.conn.send_data(sid, b"hello")
            trailers = [(n.lower(), v) for n, v in [*_FRAMING, ("X-Sum", "2")]]
            client.conn.send_headers(sid, trailers, end_stream=True)
            await client.flush()
            events = await client.read_until(
                lambda e: isinstance(e, h2.events.StreamEnded | h2.events.StreamReset)
            )
        assert isinstance(events[-1], h2.events.StreamEnded)

    assert [trailer_section(r) for r in up.requests] == [b"x-sum: 1\r\n", b"x-sum: 2\r\n"]
