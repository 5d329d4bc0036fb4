"""A grpcio server with one generic service, test.Echo, for the gRPC end-to-end tests.

Messages are raw bytes (no protobuf), which is all a proxy sees anyway. The servicer
records cancellations and the deadline it was given, so tests can watch the real upstream.
"""

import threading
import time
from concurrent import futures

import grpc

from tests.config_builder import ConfigBuilder, route

MAX_MESSAGE = 8 * 1024 * 1024
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.max_send_message_length", MAX_MESSAGE),
]


class EchoServicer:
    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.started = threading.Event()
        self.time_remaining: float | None = None
        #: Calls seen with the request b"flaky"; the first of them fails UNAVAILABLE.
        self.flaky_calls = 0
        #: Unary calls seen, of any request.
        self.unary_calls = 0

    def _watch(self, context: grpc.ServicerContext) -> None:
        context.add_callback(self._on_done(context))

    def _on_done(self, context: grpc.ServicerContext):
        def done() -> None:
            if not context.is_active():
                self.cancelled.set()

        return done

    def unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.unary_calls += 1
        self.time_remaining = context.time_remaining()
        if request == b"fail":
            context.set_trailing_metadata((("x-detail", "why-it-failed"),))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input")
        if request == b"flaky":
            self.flaky_calls += 1
            if self.flaky_calls == 1:
                context.abort(grpc.StatusCode.UNAVAILABLE, "try again")
        if request == b"sleep":
            self.started.set()
            deadline = time.monotonic() + 10
            while context.is_active() and time.monotonic() < deadline:
                time.sleep(0.01)
            self.cancelled.set()
            return b"late"
        context.set_trailing_metadata((("x-served-by", "echo"),))
        return request

    def server_stream(self, request: bytes, context: grpc.ServicerContext):
        if request == b"slow":  # a message every 50 ms, for up to 10 s
            self.started.set()
            for i in range(200):
                if not context.is_active():
                    return
                yield str(i).encode()
                time.sleep(0.05)
            return
        for i in range(int(request)):
            yield str(i).encode()

    def client_stream(self, requests, context: grpc.ServicerContext) -> bytes:
        count = 0
        size = 0
        for message in requests:
            count += 1
            size += len(message)
        return f"{count}:{size}".encode()

    def bidi(self, requests, context: grpc.ServicerContext):
        for message in requests:
            yield message[::-1]


def start_server() -> tuple[grpc.Server, int, EchoServicer]:
    servicer = EchoServicer()
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(servicer.unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(servicer.server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(servicer.client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(servicer.bidi),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, servicer


def echo_config(port: int, **route_keys: object) -> ConfigBuilder:
    """Listener `edge` sends every call, by one route (with `route_keys`), to cluster `echo`:
    the echo server at `port`, over HTTP/2."""
    config = ConfigBuilder()
    config.listener("edge", virtual_hosts=["grpc"])
    config.virtual_host("grpc", route(cluster="echo", **route_keys))
    config.cluster("echo", port, protocol="http2")
    return config
