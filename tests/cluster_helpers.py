"""Upstreams that misbehave on purpose, for the tests of multi-host clusters.

`Backend` is a hypercorn-served ASGI app on a fixed port that a test can make answer 503,
fail its health check, hang, reset mid-body, or die and come back on the same port.
"""

import json
from collections import Counter
from functools import partial
from typing import Any

import attrs
import httpx
import hypercorn.config
import hypercorn.trio
import trio

from gateway.admin.asgi import Receive, Scope, Send, complete_lifespan
from tests.helpers import KeepAliveUpstream


@attrs.define(eq=False)
class Backend:
    name: str
    port: int = 0
    #: /healthz answers 200 while true, 503 otherwise.
    healthy: bool = True
    #: The next this-many requests get 503.
    fail_next: int = 0
    #: Every request gets 503.
    always_fail: bool = False
    #: Requests hang (until the client leaves) instead of being answered.
    hang: bool = False
    #: Seconds to wait before answering.
    delay: float = 0.0
    #: x-envoy-attempt-count, body size, path and traceparent of each request served (not
    #: /healthz).
    seen: list[dict[str, Any]] = attrs.Factory(list)
    health_probes: int = 0
    #: The address to listen on (tests of DNS discovery also use "::1").
    host: str = "127.0.0.1"
    _scope: trio.CancelScope | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
            return
        if scope["path"] == "/healthz":
            self.health_probes += 1
            await self._answer(send, 200 if self.healthy else 503, b"")
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.seen.append(
            {
                "attempt": headers.get("x-envoy-attempt-count"),
                "body": len(body),
                "path": scope["path"],
                "traceparent": headers.get("traceparent"),
            }
        )
        if self.hang:
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        if self.delay:
            await trio.sleep(self.delay)
        if self.always_fail or self.fail_next > 0:
            self.fail_next = max(self.fail_next - 1, 0)
            await self._answer(send, 503, b"failing on purpose")
            return
        payload = {"server": self.name, "body_bytes": len(body), "path": scope["path"]}
        await self._answer(send, 200, json.dumps(payload).encode())

    @staticmethod
    async def _answer(send: Send, status: int, body: bytes) -> None:
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self._serve)

    async def _serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        config = hypercorn.config.Config()
        config.bind = [
            f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        ]
        config.accesslog = None
        config.graceful_timeout = 0.1
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                serve = partial(hypercorn.trio.serve, self, config, mode="asgi")
                binds = await nursery.start(serve)
                self.port = int(binds[0].rpartition(":")[2])
                task_status.started()

    def kill(self) -> None:
        """Dies at once: the listening socket and every connection close."""
        assert self._scope is not None
        self._scope.cancel()


async def start_backends(nursery: trio.Nursery, count: int) -> list[Backend]:
    backends = [Backend(f"b{i}") for i in range(count)]
    for backend in backends:
        await backend.start(nursery)
    return backends


async def spread(client: httpx.AsyncClient, url: str, n: int, **kwargs: Any) -> Counter[str]:
    """Sends n sequential requests; counts the answering servers (or statuses if not 200)."""
    seen: Counter[str] = Counter()
    for _ in range(n):
        response = await client.get(url, **kwargs)
        seen[
            response.json()["server"] if response.status_code == 200 else str(response.status_code)
        ] += 1
    return seen


@attrs.define(eq=False)
class AtomicBackend(KeepAliveUpstream):
    """A keep-alive upstream that writes each response (head and small body) in one write,
    as nginx does, and can be killed and restarted on its port: when it is killed, a
    request is either fully answered or not answered at all, never cut mid-body."""

    name: str = "atomic"
    _scope: trio.CancelScope | None = None

    def __attrs_post_init__(self) -> None:
        self.body = json.dumps({"server": self.name}).encode()

    async def start(self, nursery: trio.Nursery) -> None:
        await nursery.start(self._serve)

    async def _serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as self._scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, self.handle, listeners)
                task_status.started()

    def kill(self) -> None:
        assert self._scope is not None
        self._scope.cancel()
