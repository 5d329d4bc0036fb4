"""The live Trio task tree, annotated with what each gateway task is.

Listener, connection and stream tasks call `annotate()` once when they start; the
annotation lives in a WeakKeyDictionary keyed by the task, so it costs one dict insert per
task and disappears with it. `/tasks` walks trio's own tree (root task -> child nurseries
-> child tasks) and joins the annotations, so the view can never drift from reality: a task
that exists is shown, with where its coroutine is suspended right now.
"""

import contextlib
import os
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import trio


@attrs.define
class Annotation:
    kind: str
    started: float
    fields: dict[str, Any]
    #: Called at snapshot time for values that change while the task runs.
    live: Callable[[], dict[str, Any]] | None = None


_annotations: "weakref.WeakKeyDictionary[trio.lowlevel.Task, Annotation]" = (
    weakref.WeakKeyDictionary()
)


def annotate(kind: str, live: Callable[[], dict[str, Any]] | None = None, **fields: Any) -> None:
    """Marks the current task as a gateway `kind` ("listener", "connection", "stream", ...)."""
    task = trio.lowlevel.current_task()
    _annotations[task] = Annotation(kind, time.monotonic(), fields, live)


@contextlib.contextmanager
def preserve_annotation() -> Iterator[None]:
    """Lets code annotate the current task for a while (a stream run inline in its
    connection's task), then puts the task's own annotation back."""
    task = trio.lowlevel.current_task()
    saved = _annotations.get(task)
    try:
        yield
    finally:
        if saved is not None:
            _annotations[task] = saved


def _awaiting(task: trio.lowlevel.Task) -> str | None:
    """Where the task is suspended, as the innermost frame outside trio itself, e.g.
    'Http1Connection._receive (conn_h1.py:97)'."""
    last = None
    for frame, lineno in task.iter_await_frames():
        if f"{os.sep}trio{os.sep}" not in frame.f_code.co_filename:
            last = (frame, lineno)
    if last is None:
        return None
    frame, lineno = last
    return f"{frame.f_code.co_qualname} ({os.path.basename(frame.f_code.co_filename)}:{lineno})"


def _node(task: trio.lowlevel.Task, now: float) -> dict[str, Any]:
    node: dict[str, Any] = {"name": task.name}
    ann = _annotations.get(task)
    if ann is not None:
        node["kind"] = ann.kind
        node["age_s"] = round(now - ann.started, 3)
        node.update(ann.fields)
        if ann.live is not None:
            node.update(ann.live())
    if (awaiting := _awaiting(task)) is not None:
        node["awaiting"] = awaiting
    children = [
        _node(child, now)
        for nursery in task.child_nurseries
        for child in sorted(nursery.child_tasks, key=lambda t: t.name)
    ]
    if children:
        node["children"] = children
    return node


def snapshot() -> dict[str, Any]:
    """The whole task tree of the running Trio loop, as nested dicts."""
    return _node(trio.lowlevel.current_root_task(), time.monotonic())


def render_text(node: dict[str, Any], indent: str = "") -> str:
    """The tree as an indented outline, one task per line."""
    extras = [
        f"{k}={v}"
        for k, v in node.items()
        if k not in ("name", "children", "kind") and v not in (None, "", "-")
    ]
    kind = f"[{node['kind']}] " if "kind" in node else ""
    line = f"{indent}{kind}{node['name']}" + (f"  ({', '.join(extras)})" if extras else "")
    lines = [line]
    for child in node.get("children", ()):
        lines.append(render_text(child, indent + "  "))
    return "\n".join(lines)
