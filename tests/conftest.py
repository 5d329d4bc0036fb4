"""Test configuration: pytest-trio runs every async test in its own Trio loop."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.grpc_echo import EchoServicer, start_server
from tests.tls_helpers import CertFiles, Pki


@pytest.fixture
def echo_server() -> Iterator[tuple[int, EchoServicer]]:
    """The gRPC echo server of tests/grpc_echo.py: its port and servicer."""
    server, port, servicer = start_server()
    yield port, servicer
    server.stop(grace=None)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """A CA, and the certificate files made from it, under the test's tmp_path."""
    return Pki(tmp_path)


@pytest.fixture
def cert(pki: Pki) -> CertFiles:
    """A certificate for "localhost" from `pki` (the QUIC listener tests' server)."""
    return pki.issue("localhost")
