"""The live Trio task tree, annotated with what each gateway task is.

Listener, connection and stream tasks call `annotate()` once when they start. The
annotation lives in a dict keyed by the task, one per Trio run, and the run's instrument
drops it as the task exits (`task_exited`: one dict pop per task). An annotation holds what
its task shows, often its owner: a connection's bound `task_fields`, so the connection, so
its nursery, whose parent is the task itself. Keyed weakly, such an entry keeps its own key
alive (that leaked every closed HTTP/1.1 connection); dropped at exit, an annotation never
outlives its task, whatever it references.

`/tasks` walks trio's own tree (root task -> child nurseries -> child tasks) and joins the
annotations, so the view can never drift from reality: a task that exists is shown, with
where its coroutine is suspended right now.

Annotated tasks get a number (`id`) that stays theirs while they live; a task annotated
with a cancel scope can be cancelled by that number (`POST /tasks/ID/cancel`). Tracking
can be switched off per Trio run (`[admin] task_tree = false`): `annotate()` then returns at
once, the tree shows bare Trio tasks, and no instrument costs anything at task exit.
"""

import contextlib
import itertools
import math
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import attrs
import trio

_ids = itertools.count(1)


class Cancellable(Protocol):
    """A task's cancel handle: a trio.CancelScope, or a stream's own (which also notes that
    the operator, not the client, cancelled)."""

    def cancel(self) -> None: ...


@attrs.define
class Annotation:
    kind: str
    started: float
    fields: dict[str, Any]
    #: Called at snapshot time for values that change while the task runs.
    live: Callable[[], dict[str, Any]] | None = None
    id: int = 0
    #: What `cancel()` cancels: the task's whole work, so cancelling it ends the task.
    cancel_scope: "Cancellable | None" = None


class _RunAnnotations(trio.abc.Instrument):
    """The annotations of one Trio run's live tasks; as an instrument of the run (installed
    once, when first enabled), it forgets each task's annotation as the task exits."""

    __slots__ = ("by_task", "enabled")

    def __init__(self, enabled: bool) -> None:
        self.by_task: dict[trio.lowlevel.Task, Annotation] = {}
        self.enabled = False
        self.enable(enabled)

    def enable(self, enabled: bool) -> None:
        if enabled and not self.enabled:
            trio.lowlevel.add_instrument(self)  # a no-op if installed before
        self.enabled = enabled

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.by_task.pop(task, None)


_run_annotations: trio.lowlevel.RunVar[_RunAnnotations] = trio.lowlevel.RunVar("task_annotations")


def _annotations() -> dict[trio.lowlevel.Task, Annotation]:
    """This run's annotations (none yet: an empty dict)."""
    try:
        return _run_annotations.get().by_task
    except LookupError:
        return {}


def set_enabled(enabled: bool) -> None:
    """Turns annotation on or off for the current Trio run (the gateway's `[admin]
    task_tree`); tasks annotated before keep their annotation."""
    try:
        _run_annotations.get().enable(enabled)
    except LookupError:
        _run_annotations.set(_RunAnnotations(enabled))


def annotate(
    kind: str,
    live: Callable[[], dict[str, Any]] | None = None,
    *,
    cancel_scope: Cancellable | None = None,
    **fields: Any,
) -> None:
    """Marks the current task as a gateway `kind` ("listener", "connection", "stream", ...).

    With `cancel_scope` the task is a new thing with a new id, and the admin endpoint can
    cancel it. Without one, a task already annotated keeps its id and scope: it is the same
    work seen anew (a stream that became a tunnel).
    """
    try:
        run = _run_annotations.get()
    except LookupError:  # the run's first annotation, and no set_enabled before it: on
        run = _RunAnnotations(True)
        _run_annotations.set(run)
    if not run.enabled:
        return
    annotations = run.by_task
    task = trio.lowlevel.current_task()
    prior = annotations.get(task) if cancel_scope is None else None
    if prior is not None and prior.cancel_scope is not None:
        task_id, cancel_scope = prior.id, prior.cancel_scope
    else:
        task_id = next(_ids)
    annotations[task] = Annotation(kind, time.monotonic(), fields, live, task_id, cancel_scope)


@contextlib.contextmanager
def preserve_annotation() -> Iterator[None]:
    """Lets code annotate the current task for a while (a stream run inline in its
    connection's task), then puts the task's own annotation back."""
    task = trio.lowlevel.current_task()
    annotations = _annotations()
    saved = annotations.get(task)
    try:
        yield
    finally:
        if saved is not None:
            annotations[task] = saved


def task_path() -> tuple[list[str], int | None] | None:
    """Where the running code is: the names of the current task and its ancestors that
    are annotated (a listener, a connection, a stream, ...), from the root down, and the
    innermost one's id; with annotation off, every ancestor's name. None outside Trio
    (a worker thread, before the run)."""
    try:
        task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
    except RuntimeError:
        return None
    try:
        run = _run_annotations.get()
    except LookupError:
        run = None
    annotations = run.by_task if run is not None and run.enabled else None
    names: list[str] = []
    innermost: int | None = None
    while task is not None:
        if annotations is None:
            names.append(task.name)
        elif (ann := annotations.get(task)) is not None:
            names.append(task.name)
            innermost = innermost or ann.id
        parent = task.parent_nursery
        task = parent.parent_task if parent is not None else None
    if annotations is None:
        names.pop()  # trio's own root task, `<init>`
    names.reverse()
    return names, innermost


#: Frames that say nothing about what a task waits for: trio's, and the gateway's own
#: socket helpers (every reader passes through them).
_PLUMBING = (f"{os.sep}trio{os.sep}", f"{os.sep}gateway{os.sep}io{os.sep}fast_io.py")


def _awaiting(task: trio.lowlevel.Task) -> str | None:
    """Where the task is suspended, as the innermost frame outside the plumbing, e.g.
    'Http1Connection._receive (conn_h1.py:97)'."""
    last = None
    for frame, lineno in task.iter_await_frames():
        if not any(part in frame.f_code.co_filename for part in _PLUMBING):
            last = (frame, lineno)
    if last is None:
        return None
    frame, lineno = last
    return f"{frame.f_code.co_qualname} ({os.path.basename(frame.f_code.co_filename)}:{lineno})"


def _deadline(task: trio.lowlevel.Task) -> float:
    """The task's effective cancel-scope deadline (trio time). Trio offers this only for
    the current task (`current_effective_deadline`), so it is read from the task's cancel
    status, which every task has; anything unexpected there reads as no deadline."""
    status = getattr(task, "_cancel_status", None)
    effective = getattr(status, "effective_deadline", None)
    return effective() if callable(effective) else math.inf


def _node(
    task: trio.lowlevel.Task,
    annotations: dict[trio.lowlevel.Task, Annotation],
    now: float,
    trio_now: float,
) -> dict[str, Any]:
    node: dict[str, Any] = {"name": task.name}
    ann = annotations.get(task)
    if ann is not None:
        node["id"] = ann.id
        node["kind"] = ann.kind
        node["age_s"] = round(now - ann.started, 3)
        node.update(ann.fields)
        if ann.live is not None:
            node.update(ann.live())
        deadline = _deadline(task)
        if deadline != math.inf:
            node["deadline_s"] = round(max(deadline - trio_now, 0.0), 3)
        if ann.cancel_scope is not None:
            node["cancellable"] = True
    if (awaiting := _awaiting(task)) is not None:
        node["awaiting"] = awaiting
    children = [
        _node(child, annotations, now, trio_now)
        for nursery in task.child_nurseries
        for child in sorted(nursery.child_tasks, key=lambda t: t.name)
    ]
    if children:
        node["children"] = children
    return node


def snapshot() -> dict[str, Any]:
    """The whole task tree of the running Trio loop, as nested dicts."""
    return _node(_root_task(), _annotations(), time.monotonic(), trio.current_time())


def _root_task() -> trio.lowlevel.Task:
    root = trio.lowlevel.current_root_task()
    assert root is not None  # None only while trio starts the run, before any of our tasks
    return root


def _tasks(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    yield task
    for nursery in task.child_nurseries:
        for child in nursery.child_tasks:
            yield from _tasks(child)


class NotCancellable(Exception):
    """The task exists but has no cancel scope of its own (a listener, the admin, ...)."""


def cancel(task_id: int) -> Annotation:
    """Cancels the live task with this id; returns its annotation. Raises LookupError if
    no live task has the id, NotCancellable if it has no cancel scope."""
    annotations = _annotations()
    for task in _tasks(_root_task()):
        ann = annotations.get(task)
        if ann is not None and ann.id == task_id:
            if ann.cancel_scope is None:
                raise NotCancellable(f"task {task_id} ({ann.kind}) cannot be cancelled")
            ann.cancel_scope.cancel()
            return ann
    raise LookupError(f"no task {task_id}")


def render_text(node: dict[str, Any], indent: str = "") -> str:
    """The tree as an indented outline, one task per line."""
    extras = [
        f"{k}={v}"
        for k, v in node.items()
        if k not in ("name", "children", "kind", "cancellable") and v not in (None, "", "-")
    ]
    kind = f"[{node['kind']}] " if "kind" in node else ""
    line = f"{indent}{kind}{node['name']}" + (f"  ({', '.join(extras)})" if extras else "")
    lines = [line]
    for child in node.get("children", ()):
        lines.append(render_text(child, indent + "  "))
    return "\n".join(lines)
