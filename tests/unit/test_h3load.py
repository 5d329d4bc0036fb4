"""bench/load/h3load.py, the http3 section's load generator, against a real HTTP/3 server
over loopback UDP: the gate passes only on 200 "hello world", and a run counts answers and
errors as the section's table reads them. The server is aioquic's asyncio one (the gateway's
QUIC library), in a thread; qh3's own server fails its first answer to this client
("packet builder capacity exhausted"), while Envoy's and aioquic's serve it."""

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("aioquic", reason="the gateway's QUIC library serves these tests")

from aioquic.asyncio import QuicConnectionProtocol, serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

from bench.certs import make_cert

H3LOAD = Path(__file__).resolve().parents[2] / "bench" / "load" / "h3load.py"


def _server_protocol(status: bytes, body: bytes) -> type[QuicConnectionProtocol]:
    class Answer(QuicConnectionProtocol):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.h3 = H3Connection(self._quic)

        def quic_event_received(self, event: QuicEvent) -> None:
            for h3_event in self.h3.handle_event(event):
                if isinstance(h3_event, HeadersReceived) and h3_event.stream_ended:
                    self.h3.send_headers(h3_event.stream_id, [(b":status", status)])
                    self.h3.send_data(h3_event.stream_id, body, end_stream=True)
                    self.transmit()

    return Answer


@pytest.fixture
def h3_server(tmp_path) -> Iterator[callable]:
    """start(status, body) -> the UDP port of an HTTP/3 server answering every request so."""
    files = make_cert(tmp_path)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers = []

    def start(status: bytes, body: bytes) -> int:
        config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        config.load_cert_chain(files.cert, files.key)
        coro = serve(
            "127.0.0.1", 0, configuration=config, create_protocol=_server_protocol(status, body)
        )
        server = asyncio.run_coroutine_threadsafe(coro, loop).result(10)
        servers.append(server)
        return server._transport.get_extra_info("sockname")[1]

    yield start
    for server in servers:
        loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def h3load(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(H3LOAD), *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_check_passes_on_hello_world(h3_server):
    port = h3_server(b"200", b"hello world\n")
    assert h3load("check", "--port", str(port)) == {"ok": True, "error": ""}


def test_check_fails_on_another_answer(h3_server):
    port = h3_server(b"503", b"no\n")
    report = h3load("check", "--port", str(port))
    assert report == {"ok": False, "error": "answer b'503' b'no\\n'"}


def test_check_fails_without_a_server():
    report = h3load("check", "--port", "9", "--timeout", "1")
    assert report["ok"] is False
    assert report["error"] == "QUIC handshake did not complete"


def test_run_counts_answers(h3_server):
    port = h3_server(b"200", b"hello world\n")
    args = ["--port", str(port), "--processes", "2", "--connections", "2", "--streams", "3"]
    report = h3load("run", *args, "--duration", "1")
    assert report["errors"] == 0, report["first_error"]
    assert report["requests"] > 100
    assert report["rps"] == pytest.approx(report["requests"] / report["seconds"])
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert report["cpu_s"] > 0


def test_run_counts_wrong_answers_as_errors(h3_server):
    port = h3_server(b"200", b"something else\n")
    report = h3load("run", "--port", str(port), "--processes", "1", "--duration", "1")
    assert report["requests"] == 0
    assert report["errors"] > 0
    assert report["first_error"] == "answer b'200' b'something else\\n'"
