"""h3load: a closed-loop HTTP/3 load generator on qh3's sans-IO client, for bench/run.py's
http3 section (Debian's h2load is built without HTTP/3, and no packaged tool has it).

qh3 is aioquic's fork with packet protection, QPACK and part of the connection's state machine
in Rust: the same API, at about half aioquic's CPU time per request here (100 against 200 us
through Envoy), so the client takes less of the cores it shares with the proxy under test.

    python bench/load/h3load.py check --port P
    python bench/load/h3load.py run --port P --processes 2 --connections 5 --streams 10 \
        --duration 5

`run` forks PROCESSES workers; each opens CONNECTIONS QUIC connections to 127.0.0.1:PORT
(ALPN h3, the certificate is not verified, as h2load does not) and keeps STREAMS `GET /`
requests in flight on each: a finished one starts the next, until DURATION seconds have
passed; those still in flight then are left out, as h2load leaves out its last ones. No
asyncio: one `selectors` loop per worker over one connected UDP socket per connection, so
the client spends its CPU on QUIC and HTTP/3, not on an event loop.

Both commands print one JSON object on stdout. `run`: {"requests": answered 200 with
"hello world", "rps", "p50_ms", "p99_ms", "errors": other answers, resets and requests lost
with a connection, "first_error", "cpu_s": the workers' CPU time (user + system),
"seconds"}. `check`: {"ok": one request answered 200 "hello world", "error"}.
Standalone (stdlib and qh3), like grpc_peer.py.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import ssl
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

from qh3.h3.connection import H3_ALPN, H3Connection
from qh3.h3.events import DataReceived, H3Event, HeadersReceived
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection, QuicConnectionError
from qh3.quic.events import ConnectionTerminated, HandshakeCompleted, StreamReset

HELLO = b"hello world\n"
REQUEST = [
    (b":method", b"GET"),
    (b":scheme", b"https"),
    (b":authority", b"bench.local"),
    (b":path", b"/"),
]
#: A connection that has not finished its handshake by then counts as failed.
HANDSHAKE_TIMEOUT = 5.0


@dataclass
class _Stream:
    started: float
    status: bytes = b""
    body: bytes = b""


@dataclass
class Tally:
    """What one worker saw (it crosses back to the parent process pickled)."""

    latencies_us: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    cpu_s: float = 0.0
    seconds: float = 0.0

    def error(self, what: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or what


class _Client:
    """One QUIC connection keeping up to `streams` requests in flight, `limit` in all."""

    def __init__(self, port: int, streams: int, tally: Tally, limit: int | None = None) -> None:
        config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
        config.server_name = "localhost"
        config.verify_mode = ssl.CERT_NONE
        self.quic = QuicConnection(configuration=config)
        self.h3 = H3Connection(self.quic)
        self.addr = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(self.addr)
        self.streams, self.tally, self.left = streams, tally, limit
        self.open: dict[int, _Stream] = {}
        self.ready = self.closed = False
        self.close_reason = ""

    def start(self, now: float) -> None:
        self.quic.connect(self.addr, now)
        self.flush(now)

    def done(self) -> bool:
        return self.closed or (self.left == 0 and not self.open)

    def flush(self, now: float) -> None:
        for data, _addr in self.quic.datagrams_to_send(now):
            try:
                self.sock.send(data)
            except (BlockingIOError, ConnectionRefusedError):
                # A full socket buffer, or an ICMP error from an earlier datagram (nothing
                # listening yet): QUIC's loss recovery sends again.
                pass

    def receive(self, now: float) -> None:
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                self.quic.receive_datagram(data, self.addr, now)
            self.process(now)
        except QuicConnectionError as exc:
            # qh3 raises this from any call on a connection that has closed itself.
            self.lost(exc.reason_phrase)

    def on_timer(self, now: float) -> None:
        try:
            self.quic.handle_timer(now)
            self.process(now)
        except QuicConnectionError as exc:
            self.lost(exc.reason_phrase)

    def lost(self, reason: str) -> None:
        """The connection is gone: the requests it had in flight are errors."""
        self.closed, self.close_reason = True, reason
        for _ in self.open:
            self.tally.error(f"connection closed: {reason}")
        self.open.clear()

    def process(self, now: float) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                self.ready = True
            elif isinstance(event, ConnectionTerminated):
                self.lost(event.reason_phrase or f"error code {event.error_code}")
                return
            elif isinstance(event, StreamReset) and event.stream_id in self.open:
                del self.open[event.stream_id]
                self.tally.error(f"stream reset: error code {event.error_code}")
            for h3_event in self.h3.handle_event(event):
                self.on_h3(h3_event, now)
        while self.ready and len(self.open) < self.streams and self.left != 0:
            stream_id = self.quic.get_next_available_stream_id()
            self.h3.send_headers(stream_id, REQUEST, end_stream=True)
            self.open[stream_id] = _Stream(now)
            self.left = None if self.left is None else self.left - 1
        self.flush(now)

    def on_h3(self, event: H3Event, now: float) -> None:
        if not isinstance(event, HeadersReceived | DataReceived):
            return
        stream = self.open.get(event.stream_id)
        if stream is None:
            return
        if isinstance(event, HeadersReceived):
            stream.status = dict(event.headers).get(b":status", b"")
        else:
            stream.body += event.data
        if event.stream_ended:
            del self.open[event.stream_id]
            if stream.status == b"200" and stream.body == HELLO:
                self.tally.latencies_us.append(round((now - stream.started) * 1e6))
            else:
                self.tally.error(f"answer {stream.status!r} {stream.body[:80]!r}")


def _loop(clients: list[_Client], until: float) -> None:
    """Runs the clients until `until` or until each is done; requests still in flight at
    `until` are left out."""
    selector = selectors.DefaultSelector()
    for client in clients:
        selector.register(client.sock, selectors.EVENT_READ, client)
    while not all(c.done() for c in clients):
        now = time.monotonic()
        if now >= until:
            return
        timers = [t for c in clients if not c.closed and (t := c.quic.get_timer()) is not None]
        for key, _mask in selector.select(max(0.0, min([*timers, until]) - now)):
            receiver: _Client = key.data
            receiver.receive(time.monotonic())
        now = time.monotonic()
        for client in clients:
            timer = client.quic.get_timer()
            if not client.closed and timer is not None and timer <= now:
                client.on_timer(now)


def _clients(port: int, count: int, streams: int, tally: Tally, limit: int | None) -> list[_Client]:
    clients = [_Client(port, streams, tally, limit) for _ in range(count)]
    now = time.monotonic()
    for client in clients:
        client.start(now)
    return clients


def _close(clients: list[_Client]) -> None:
    for client in clients:
        if not client.ready:
            client.tally.error("QUIC handshake did not complete")
        if not client.closed:
            client.quic.close()
            client.flush(time.monotonic())
        client.sock.close()


def worker(port: int, connections: int, streams: int, duration: float) -> Tally:
    """One process's share: its connections for `duration` seconds, and its CPU time."""
    cpu, start = time.process_time(), time.monotonic()
    tally = Tally()
    clients = _clients(port, connections, streams, tally, None)
    _loop(clients, start + duration)
    tally.seconds = time.monotonic() - start
    _close(clients)
    tally.cpu_s = time.process_time() - cpu
    return tally


def run(
    port: int, processes: int, connections: int, streams: int, duration: float
) -> dict[str, object]:
    # fork: the workers need nothing but this module, and start in milliseconds.
    with ProcessPoolExecutor(processes, mp_context=get_context("fork")) as pool:
        futures = [
            pool.submit(worker, port, connections, streams, duration) for _ in range(processes)
        ]
        parts = [f.result() for f in futures]
    latencies = sorted(us for p in parts for us in p.latencies_us)
    seconds = max(p.seconds for p in parts)

    def percentile(q: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000

    return {
        "requests": len(latencies),
        "rps": len(latencies) / seconds,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "errors": sum(p.errors for p in parts),
        "first_error": next((p.first_error for p in parts if p.first_error), ""),
        "cpu_s": sum(p.cpu_s for p in parts),
        "seconds": seconds,
    }


def check(port: int, timeout: float) -> dict[str, object]:
    """One `GET /` on one connection: did it come back 200 "hello world" in time?"""
    tally = Tally()
    clients = _clients(port, 1, 1, tally, 1)
    _loop(clients, time.monotonic() + timeout)
    _close(clients)
    if not tally.latencies_us and not tally.errors:
        closed = clients[0].closed
        tally.error(
            f"connection closed: {clients[0].close_reason}"
            if closed
            else f"no answer within {timeout}s"
        )
    return {"ok": bool(tally.latencies_us), "error": tally.first_error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check_cmd = sub.add_parser("check", help="one GET /, expecting 200 'hello world'")
    check_cmd.add_argument("--port", type=int, required=True)
    check_cmd.add_argument("--timeout", type=float, default=5.0)
    run_cmd = sub.add_parser("run", help="closed-loop load")
    run_cmd.add_argument("--port", type=int, required=True)
    run_cmd.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    run_cmd.add_argument("--connections", type=int, default=5, help="per process")
    run_cmd.add_argument("--streams", type=int, default=10, help="in flight per connection")
    run_cmd.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    if args.command == "check":
        report = check(args.port, args.timeout)
    else:
        report = run(args.port, args.processes, args.connections, args.streams, args.duration)
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
