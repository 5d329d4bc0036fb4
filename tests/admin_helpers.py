"""Reading the admin endpoint in tests: the task tree and its nodes."""

from collections.abc import Iterator
from typing import Any

import httpx
import trio

from gateway import Gateway
from tests.helpers import admin_url


def nodes(tree: dict[str, Any], **fields: Any) -> Iterator[dict[str, Any]]:
    """Every node of a /tasks tree whose fields have these values (depth first)."""
    if all(tree.get(k) == v for k, v in fields.items()):
        yield tree
    for child in tree.get("children", ()):
        yield from nodes(child, **fields)


async def tasks(client: httpx.AsyncClient, gw: Gateway, **params: str) -> dict[str, Any]:
    r = await client.get(admin_url(gw, "/tasks"), params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def wait_for_node(
    client: httpx.AsyncClient, gw: Gateway, timeout: float = 3.0, **fields: Any
) -> dict[str, Any]:
    """The one node with these fields, once it shows up in /tasks."""
    with trio.fail_after(timeout):
        while True:
            found = list(nodes(await tasks(client, gw), **fields))
            if found:
                assert len(found) == 1, found
                return found[0]
            await trio.sleep(0.02)


async def cancel(client: httpx.AsyncClient, gw: Gateway, task_id: object) -> httpx.Response:
    return await client.post(admin_url(gw, f"/tasks/{task_id}/cancel"))
