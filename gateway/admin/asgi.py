"""The bits of ASGI shared by the admin app and the demo upstreams."""

from collections.abc import Awaitable, Callable
from typing import Any, cast

from hypercorn.typing import ASGIFramework

from gateway.io.trio_util import leaves

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def for_hypercorn(app: App) -> ASGIFramework:
    """The app as hypercorn types it: hypercorn spells each message as a TypedDict, these
    apps read them as plain dicts, and mypy relates the two only through a cast."""
    return cast(ASGIFramework, app)


def bind_failure(exc: BaseException) -> str | None:
    """Why hypercorn could not bind its address ("Address already in use"), if that is
    what `exc` is: hypercorn binds inside a nursery of its own, so the OSError may come
    wrapped in exception groups."""
    errors = [e for e in leaves(exc) if isinstance(e, OSError)]
    return (errors[0].strerror or str(errors[0])) if errors else None


async def complete_lifespan(receive: Receive, send: Send) -> None:
    """Acknowledges startup and shutdown; these apps have nothing to set up."""
    while True:
        message = await receive()
        kind = message["type"].rpartition(".")[2]
        await send({"type": f"lifespan.{kind}.complete"})
        if kind == "shutdown":
            return


async def count_body(receive: Receive) -> int:
    """Reads a request body to its end, counting its bytes without keeping them."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            return size
