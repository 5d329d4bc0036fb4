"""The grpcio echo server of grpc_peer.py: the gRPC section's upstream (and its
`upstream-direct` row)."""

import contextlib
import sys
from pathlib import Path

from bench.load.grpc_client import GRPC_PEER, check_grpc
from bench.services import Service, free_port, start_checked


def start_grpc_echo(stack: contextlib.ExitStack, tmp: Path) -> Service:
    port = free_port()
    argv = [sys.executable, str(GRPC_PEER), "serve", "--port", str(port)]
    return start_checked(stack, tmp, "grpc-server", argv, port, check_grpc)
