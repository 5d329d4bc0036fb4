"""`gateway demo-upstreams`: small HTTP echo servers to put behind the gateway.

Each answers every request with JSON describing what it received (method, path, headers,
body size) and which server answered, so a newcomer sees the gateway's routing, rewrites
and added headers at a glance. Served by hypercorn, like the admin endpoint.
"""

import json
import logging
from collections.abc import Awaitable, Callable
from functools import partial

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

log = logging.getLogger("gateway.demo")


def echo_app(server_name: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await complete_lifespan(receive, send)
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
    print(f"demo upstream listening on http://{address}", flush=True)
