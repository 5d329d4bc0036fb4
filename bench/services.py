"""The processes a benchmark runs: each starts from an argv in its own session, logs to a
file in the scratch directory, is waited for and gated, and is stopped when the exit stack
that started it closes (SIGTERM, then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: The checkout this package is in: the gateway every benchmark measures unless told otherwise.
REPO_DIR = Path(__file__).resolve().parents[1]


class PeerUnavailable(Exception):
    """A peer could not be found, started, or verified."""


@dataclass
class Service:
    """A running server under test (or an upstream), with its combined stdout/stderr log."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_udp_port() -> int:
    """A UDP port nothing is bound to, for a QUIC listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL if it is still there."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def source_env(source: Path = REPO_DIR) -> dict[str, str]:
    """The environment in which `python -m gateway` imports the gateway in `source` (this
    checkout by default), not a copy installed by an earlier `pip install .`."""
    path = os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def launch(
    stack: contextlib.ExitStack,
    tmp: Path,
    name: str,
    port: int,
    argv: list[str],
    source: Path = REPO_DIR,
) -> Service:
    """Starts argv in its own session (so Ctrl-C reaches only us); stopped when stack closes.
    A gateway runs from `source`: the numbers are always for the code next to the benchmark
    unless a caller (checkout_ab.py) names another checkout."""
    log = tmp / f"{name}.log"
    log_file = stack.enter_context(log.open("wb"))
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=tmp,
        start_new_session=True,
        env=source_env(source),
    )
    stack.callback(stop, proc)
    return Service(name, port, proc, log)


def wait_accepting(service: Service, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise PeerUnavailable(
                f"{service.name} exited with code {service.proc.returncode}:\n"
                f"{log_tail(service.log)}"
            )
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", service.port), 1):
            return
        time.sleep(0.1)
    raise PeerUnavailable(
        f"{service.name} did not accept connections on port {service.port} within {timeout}s:\n"
        f"{log_tail(service.log)}"
    )


def start_checked(
    stack: contextlib.ExitStack,
    tmp: Path,
    name: str,
    argv: list[str],
    port: int,
    gate: Callable[[Service], None],
    timeout: float = 30.0,
    source: Path = REPO_DIR,
) -> Service:
    service = launch(stack, tmp, name, port, argv, source)
    wait_accepting(service, timeout)
    gate(service)
    return service


def start_probed(
    stack: contextlib.ExitStack,
    tmp: Path,
    name: str,
    argv: list[str],
    port: int,
    probe: Callable[[Service], str | None],
    timeout: float = 30.0,
) -> Service:
    """start_checked for a server with no TCP port to wait for (QUIC): `probe` (None when it
    answers correctly, else what went wrong) is tried until it passes or `timeout` ends."""
    service = launch(stack, tmp, name, port, argv)
    deadline = time.monotonic() + timeout
    while True:
        problem = probe(service)
        if problem is None:
            return service
        if service.proc.poll() is not None:
            raise PeerUnavailable(
                f"{service.name} exited with code {service.proc.returncode}:\n"
                f"{log_tail(service.log)}"
            )
        if time.monotonic() > deadline:
            raise PeerUnavailable(
                f"{service.name} did not answer within {timeout}s: {problem}\n"
                f"{log_tail(service.log)}"
            )
        time.sleep(0.2)


def raise_fd_limit() -> int:
    """The soft RLIMIT_NOFILE up to the hard one, for thousands of connections; every
    process started from here on inherits it. Returns the new limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Lets `kill PID` unwind through the cleanup just like Ctrl-C does."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
