"""Narrowing and ordering a task tree snapshot: what `/tasks?listener=&cluster=&
older_than=&state=&sort=age` (and `gateway tasks`) ask for.

A node matches when every given condition holds for its own fields. The result keeps each
matching node with its whole subtree (a matching stream keeps its upload task), and the
ancestors that lead to it, so the answer is still a tree rooted where Trio's is.
"""

from typing import Any

import attrs

from gateway.config.load import parse_duration

Node = dict[str, Any]


@attrs.frozen
class TaskQuery:
    listener: str | None = None
    cluster: str | None = None
    older_than: float | None = None
    #: A case-insensitive substring of the node's `state`.
    state: str | None = None
    sort_by_age: bool = False

    @classmethod
    def from_params(cls, params: dict[str, str]) -> "TaskQuery":
        """From query parameters; raises ValueError naming the bad parameter."""
        older_than = None
        if params.get("older_than"):
            try:
                older_than = parse_duration(params["older_than"])
            except ValueError as exc:
                raise ValueError(f"older_than: {exc}") from None
        sort = params.get("sort", "name")
        if sort not in ("name", "age"):
            raise ValueError(f"sort: expected 'name' or 'age', got {sort!r}")
        return cls(
            listener=params.get("listener") or None,
            cluster=params.get("cluster") or None,
            older_than=older_than,
            state=(params.get("state") or "").lower() or None,
            sort_by_age=sort == "age",
        )

    def to_params(self) -> dict[str, str]:
        """Query parameters that give this query back (to pass it on to a worker)."""
        params = {"listener": self.listener, "cluster": self.cluster, "state": self.state}
        out = {k: v for k, v in params.items() if v}
        if self.older_than is not None:
            out["older_than"] = f"{self.older_than}s"
        if self.sort_by_age:
            out["sort"] = "age"
        return out

    @property
    def filters(self) -> bool:
        return any(
            v is not None for v in (self.listener, self.cluster, self.older_than, self.state)
        )

    def matches(self, node: Node) -> bool:
        if self.listener is not None and node.get("listener") != self.listener:
            return False
        if self.cluster is not None and node.get("cluster") != self.cluster:
            return False
        if self.older_than is not None and node.get("age_s", -1.0) < self.older_than:
            return False
        return self.state is None or self.state in str(node.get("state", "")).lower()

    def apply(self, tree: Node) -> Node:
        """The tree narrowed to matching nodes (the bare root if nothing matches)."""
        if self.filters:
            tree = _prune(tree, self) or {k: v for k, v in tree.items() if k != "children"}
        return _by_age(tree) if self.sort_by_age else tree


def _prune(node: Node, query: TaskQuery) -> Node | None:
    if query.matches(node):
        return node
    kept = [c for child in node.get("children", ()) if (c := _prune(child, query)) is not None]
    if not kept:
        return None
    return {**node, "children": kept}


def _by_age(node: Node) -> Node:
    """Children oldest first; tasks without an age (not the gateway's) after them, by name."""
    children = node.get("children")
    if not children:
        return node
    ordered = sorted(
        (_by_age(c) for c in children),
        key=lambda c: (0, -c["age_s"], c["name"]) if "age_s" in c else (1, 0.0, c["name"]),
    )
    return {**node, "children": ordered}
