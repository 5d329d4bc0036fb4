"""grpcio servers for the services Envoy's filters call: envoy.service.auth.v3.Authorization
(ext_authz) and envoy.service.ratelimit.v3.RateLimitService (ratelimit), built on the
servicers and messages xds-protos publishes. No protocol is mocked: the gateway talks to
them with its own HTTP/2 client as it would to the real services.

Each server answers with what the test's `answer` function returns for the request (the
default allows), records every request, and with `slow` set holds each call until the
caller goes away (or 10 s), recording that it saw the cancellation: how a test proves that
a client leaving the gateway cancels the call at the service.
"""

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.rpc import status_pb2


class _Recorder:
    def __init__(self, answer: Callable[[Any], Any]) -> None:
        self.answer = answer
        self.requests: list[Any] = []
        self.slow = False
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.time_remaining: list[float | None] = []

    def handle(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.requests.append(request)
        self.time_remaining.append(context.time_remaining())
        if self.slow:
            self.started.set()
            deadline = time.monotonic() + 10
            while context.is_active() and time.monotonic() < deadline:
                time.sleep(0.005)
            if not context.is_active():
                self.cancelled.set()
        return self.answer(request)


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer, _Recorder):
    def __init__(self) -> None:
        _Recorder.__init__(self, lambda request: allow())

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.handle(request, context)


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer, _Recorder):
    def __init__(self) -> None:
        _Recorder.__init__(self, lambda request: under_limit())

    def ShouldRateLimit(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self.handle(request, context)


def allow(**ok_response: Any) -> Any:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=0),
        ok_response=external_auth_pb2.OkHttpResponse(**ok_response),
    )


def deny(**denied_response: Any) -> Any:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=7),
        denied_response=external_auth_pb2.DeniedHttpResponse(**denied_response),
    )


def under_limit(**fields: Any) -> Any:
    return rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK, **fields)


def over_limit(**fields: Any) -> Any:
    return rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OVER_LIMIT, **fields)


@contextmanager
def serving(service: Any, add: Callable[[Any, grpc.Server], None]) -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    add(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(grace=None)


@contextmanager
def authorization_service() -> Iterator[tuple[AuthorizationService, int]]:
    service = AuthorizationService()
    with serving(service, external_auth_pb2_grpc.add_AuthorizationServicer_to_server) as port:
        yield service, port


@contextmanager
def rate_limit_service() -> Iterator[tuple[RateLimitService, int]]:
    service = RateLimitService()
    with serving(service, rls_pb2_grpc.add_RateLimitServiceServicer_to_server) as port:
        yield service, port
