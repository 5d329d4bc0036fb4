"""Correctness gates: a target is measured only once it answers correctly. Every HTTP
upstream (nginx, peers/nginx.py) answers every request with HELLO."""

import http.client
import re
import subprocess

from bench.services import PeerUnavailable, Service

HELLO = b"hello world\n"


def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": "bench.local"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_hello(service: Service) -> None:
    """HTTP/1.1 gate: one GET must come back 200 with nginx's body."""
    try:
        status, body = http_get(service.port)
    except (OSError, http.client.HTTPException) as exc:
        raise PeerUnavailable(f"{service.name}: GET / failed: {exc!r}") from exc
    if status != 200 or body != HELLO:
        raise PeerUnavailable(
            f"{service.name}: GET / returned {status} {body[:200]!r}, expected 200 {HELLO!r}"
        )


_H2_STATUS_RE = re.compile(r"recv \(stream_id=\d+\) :status: (\d+)")


def check_hello_h2(name: str, port: int) -> None:
    """HTTP/2 gate: a GET over h2c with prior knowledge (nghttp) must return 200 and the body."""
    argv = ["nghttp", "-v", "-t", "5", f"http://127.0.0.1:{port}/"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{name}: nghttp failed: {exc!r}") from exc
    status = _H2_STATUS_RE.search(out.stdout)
    if (
        out.returncode != 0
        or status is None
        or status[1] != "200"
        or HELLO.decode() not in out.stdout
    ):
        lines = (out.stdout + out.stderr).strip().splitlines()
        detail = lines[-1].strip() if lines else "no output"
        raise PeerUnavailable(
            f"{name}: h2c GET / (nghttp, prior knowledge) did not return 200 {HELLO!r}: "
            f"exit {out.returncode}, status {status[1] if status else None}; {detail}"
        )
