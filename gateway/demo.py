"""`gateway demo-upstreams`: small echo servers to put behind the gateway.

Each address serves three things, so the shipped gateway.toml can show all the gateway
carries: HTTP requests answered with JSON describing what was received (method, path,
headers, body size) and which server answered; WebSocket messages echoed back; and gRPC
over HTTP/2 (h2c): `demo.Echo/Echo` answers each message with itself, `demo.Echo/Ticks`
streams a message a second (as many as the request asks, up to a minute) so a call stays
in flight long enough to be watched in the task tree. Served by hypercorn, like the admin
endpoint. gRPC messages are raw bytes (no protobuf), which is all a proxy sees anyway.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import hypercorn.config
import hypercorn.trio
import trio

from gateway.admin.asgi import (
    Receive,
    Scope,
    Send,
    bind_failure,
    complete_lifespan,
    count_body,
    for_hypercorn,
)
from gateway.config.load import parse_address
from gateway.config.model import Address
from gateway.errors import StartupError
from gateway.io.trio_util import raise_single
from gateway.protocol import grpc

log = logging.getLogger("gateway.demo")

#: The most of a gRPC request the demo reads; a bigger one is refused.
MAX_GRPC_REQUEST = 1 << 20
#: Ticks one call may ask for (one a second).
MAX_TICKS = 60


def echo_app(server_name: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await websocket_echo(receive, send)
            return
        if _header(scope, b"content-type").startswith(b"application/grpc"):
            await grpc_echo(scope, receive, send)
            return
        size = await count_body(receive)
        body = (
            json.dumps(
                {
                    "server": server_name,
                    "method": scope["method"],
                    "path": scope["raw_path"].decode("latin-1")
                    + (
                        "?" + scope["query_string"].decode("latin-1")
                        if scope["query_string"]
                        else ""
                    ),
                    "headers": {
                        k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]
                    },
                    "body_bytes": size,
                },
                indent=2,
            ).encode()
            + b"\n"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def _header(scope: Scope, name: bytes) -> bytes:
    return next((value for key, value in scope["headers"] if key == name), b"")


async def websocket_echo(receive: Receive, send: Send) -> None:
    """Accepts the connection and sends every message back as it came (text or bytes)."""
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.receive":
            await send({"type": "websocket.send", **_payload(message)})
        else:  # websocket.disconnect
            return


def _payload(message: dict[str, Any]) -> dict[str, Any]:
    if message.get("text") is not None:
        return {"text": message["text"]}
    return {"bytes": message.get("bytes") or b""}


async def grpc_echo(scope: Scope, receive: Receive, send: Send) -> None:
    """The demo.Echo service: Echo answers each request message with itself; Ticks sends
    "tick N" once a second, as many times as its request says (a number, up to 60)."""
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > MAX_GRPC_REQUEST:
            await _grpc_status(send, grpc.Status.RESOURCE_EXHAUSTED, "request too large")
            return
    try:
        messages, rest = grpc.split_messages(body, MAX_GRPC_REQUEST)
    except ValueError:
        messages, rest = [], b"?"
    if rest:
        await _grpc_status(send, grpc.Status.INTERNAL, "malformed gRPC request body")
        return
    method = scope["path"]
    if method == "/demo.Echo/Echo":
        replies = messages
    elif method == "/demo.Echo/Ticks":
        text = messages[0].decode("ascii", "replace") if messages else ""
        count = min(int(text), MAX_TICKS) if text.isdigit() else 5
        replies = [f"tick {n}".encode() for n in range(1, count + 1)]
    else:
        await _grpc_status(send, grpc.Status.UNIMPLEMENTED, f"no method {method}")
        return
    head = [(b"content-type", b"application/grpc")]
    await send({"type": "http.response.start", "status": 200, "headers": head, "trailers": True})
    for n, reply in enumerate(replies):
        if n and method == "/demo.Echo/Ticks":
            await trio.sleep(1)
        await send({"type": "http.response.body", "body": grpc.frame(reply), "more_body": True})
    await send({"type": "http.response.body", "body": b""})
    await send({"type": "http.response.trailers", "headers": [(b"grpc-status", b"0")]})


async def _grpc_status(send: Send, status: grpc.Status, message: str) -> None:
    """An answer with no message, the status in its trailers. (Not trailers-only:
    hypercorn would end such a response with an empty DATA frame, which gRPC clients
    take for a stream cut short.)"""
    fields = grpc.trailers_only(200, message, int(status))
    head = [(b"content-type", b"application/grpc")]
    await send({"type": "http.response.start", "status": 200, "headers": head, "trailers": True})
    await send({"type": "http.response.body", "body": b""})
    trailers = [(n.encode(), v.encode()) for n, v in fields if n != "content-type"]
    await send({"type": "http.response.trailers", "headers": trailers})


async def serve_demo_upstreams(addresses: list[str]) -> None:
    """Serves an echo server on each address until cancelled. A bad address is a
    ValueError and an address that cannot be bound a StartupError, each naming it, before
    anything is served."""
    parsed = [parse_address(raw) for raw in addresses]
    try:
        async with trio.open_nursery() as nursery:
            for address in parsed:
                await _start_echo(nursery, address)
    except BaseExceptionGroup as group:
        raise_single(group)


async def _start_echo(nursery: trio.Nursery, address: Address) -> None:
    config = hypercorn.config.Config()
    config.bind = [str(address)]
    config.accesslog = None
    config.errorlog = log  # once, through the root handler (hypercorn's own would repeat it)
    app = for_hypercorn(echo_app(f"demo-{address.port}"))
    try:
        # Bound before it says so: `start` returns once hypercorn listens.
        await nursery.start(partial(hypercorn.trio.serve, app, config), name=f"demo {address}")
    except (OSError, BaseExceptionGroup) as exc:
        if (reason := bind_failure(exc)) is None:
            raise
        raise StartupError(f"cannot bind {address}: {reason}") from None
    print(
        f"demo upstream listening on {address}: HTTP and WebSocket echo, gRPC demo.Echo over h2c",
        flush=True,
    )
