"""tasktree: an annotation lives exactly as long as its task, whatever it references."""

import gc
import weakref
from typing import Any

import trio
import trio.testing

from gateway.observability import tasktree


def kinds(node: dict[str, Any]) -> list[str]:
    """The kinds of every annotated task in a snapshot."""
    own = [node["kind"]] if "kind" in node else []
    return own + [kind for child in node.get("children", ()) for kind in kinds(child)]


class Connection:
    """Like Http1Connection: owns a nursery (whose parent is the task it runs in) and shows
    its state through a bound method."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery

    def task_fields(self) -> dict[str, object]:
        return {"state": "open"}


async def test_an_annotation_holding_its_own_task_is_freed_when_the_task_exits():
    connections: list[weakref.ref[Connection]] = []
    seen: list[list[str]] = []

    async def connection_task() -> None:
        async with trio.open_nursery() as nursery:
            conn = Connection(nursery)
            tasktree.annotate("connection", live=conn.task_fields)
            connections.append(weakref.ref(conn))
            seen.append(kinds(tasktree.snapshot()))

    gc.disable()  # freed by reference counting, not found later by the cyclic GC
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection_task)
        assert connections and connections[0]() is None
    finally:
        gc.enable()
    assert seen == [["connection"]]
    assert kinds(tasktree.snapshot()) == []


async def test_switched_off_nothing_is_annotated():
    tasktree.set_enabled(False)

    async def task() -> None:
        tasktree.annotate("connection", peer="x")
        await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(task, name="quiet")
        await trio.testing.wait_all_tasks_blocked()
        assert kinds(tasktree.snapshot()) == []
        nursery.cancel_scope.cancel()


async def test_task_path_names_the_annotated_tasks_down_to_the_current_one():
    paths: list[Any] = []

    async def stream() -> None:
        tasktree.annotate("stream")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(upload, name="upload to HOST")

    async def upload() -> None:  # not annotated: not in the path
        paths.append(tasktree.task_path())

    async def connection() -> None:
        tasktree.annotate("connection")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream, name="stream 1 GET /x")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection, name="conn 127.0.0.1:5")
    names, task_id = paths[0]
    assert names == ["conn 127.0.0.1:5", "stream 1 GET /x"] and task_id
    assert tasktree.task_path() == ([], None)  # the test's own task: nothing annotated
    tasktree.set_enabled(False)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(connection, name="conn 127.0.0.1:5")
    # Without annotations, every task from the root's children down.
    assert paths[1][0][-3:] == ["conn 127.0.0.1:5", "stream 1 GET /x", "upload to HOST"]
    assert paths[1][1] is None


def test_task_path_outside_trio_is_none():
    assert tasktree.task_path() is None
