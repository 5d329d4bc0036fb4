"""Idle connections from the bench process itself: each serves one request and then stays
open, holding whatever a kept-alive connection keeps in the server."""

import socket
from collections.abc import Callable

import h2.connection
import h2.events

from bench.gates import HELLO


def _read_response(sock: socket.socket, done: Callable[[bytes], bool]) -> None:
    data = b""
    while not done(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response ended")
        data += chunk


def open_idle_h1(port: int) -> socket.socket:
    """A keep-alive connection that has served one request and now waits, idle."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: bench.local\r\n\r\n")
    _read_response(sock, lambda d: d.endswith(HELLO))
    return sock


def open_idle_h2(port: int) -> socket.socket:
    """An h2c connection (prior knowledge) that has served one stream and now waits, idle."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection()
    conn.initiate_connection()
    conn.send_headers(
        1,
        [(":method", "GET"), (":scheme", "http"), (":authority", "bench"), (":path", "/")],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    ended = False
    while not ended:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response ended")
        for event in conn.receive_data(chunk):
            ended = ended or isinstance(event, h2.events.StreamEnded)
        if pending := conn.data_to_send():
            sock.sendall(pending)
    return sock
