"""Test configuration: pytest-trio runs every async test in its own Trio loop."""

from collections.abc import Iterator

import pytest

from tests.grpc_echo import EchoServicer, start_server


@pytest.fixture
def echo_server() -> Iterator[tuple[int, EchoServicer]]:
    """The gRPC echo server of tests/grpc_echo.py: its port and servicer."""
    server, port, servicer = start_server()
    yield port, servicer
    server.stop(grace=None)
