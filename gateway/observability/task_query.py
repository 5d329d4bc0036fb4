"""Narrowing and ordering a task tree snapshot: what `/tasks?listener=&cluster=&
older_than=&state=&sort=age&show_query=` (and `gateway tasks`) ask for.

A node matches when every given condition holds for its own fields. The result keeps each
matching node with its whole subtree (a matching stream keeps its upload task), and the
ancestors that lead to it, so the answer is still a tree rooted where Trio's is.

Request URLs carry secrets in their query strings (tokens, signatures, session ids), and
the tree is readable by whatever reaches the admin endpoint: unless `show_query` is asked
for, a node's `path` and its name show `?[redacted]` in place of the query.
"""

from typing import Any

import attrs

from gateway.config.load import parse_duration

Node = dict[str, Any]

#: What stands for a query string the tree does not show.
HIDDEN_QUERY = "?[redacted]"
_TRUE = ("true", "1", "")


def hide_query(text: str) -> str:
    """A path (or a task name that ends with one) with its query string hidden."""
    head, query, _ = text.partition("?")
    return head + HIDDEN_QUERY if query else text


_FALSE = ("false", "0")


@attrs.frozen
class TaskQuery:
    listener: str | None = None
    cluster: str | None = None
    older_than: float | None = None
    #: A case-insensitive substring of the node's `state`.
    state: str | None = None
    sort_by_age: bool = False
    #: Show request paths with their query strings (secrets, often).
    show_query: bool = False

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
        show_query = params.get("show_query", "false").lower()
        if show_query not in _TRUE + _FALSE:
            raise ValueError(f"show_query: expected 'true' or 'false', got {show_query!r}")
        return cls(
            listener=params.get("listener") or None,
            cluster=params.get("cluster") or None,
            older_than=older_than,
            state=(params.get("state") or "").lower() or None,
            sort_by_age=sort == "age",
            show_query=show_query in _TRUE,
        )

    def to_params(self) -> dict[str, str]:
        """Query parameters that give this query back (to pass it on to a worker)."""
        params = {"listener": self.listener, "cluster": self.cluster, "state": self.state}
        out = {k: v for k, v in params.items() if v}
        if self.older_than is not None:
            out["older_than"] = f"{self.older_than}s"
        if self.sort_by_age:
            out["sort"] = "age"
        if self.show_query:
            out["show_query"] = "true"
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
        if not self.show_query:
            tree = _hide_queries(tree)
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


def _hide_queries(node: Node) -> Node:
    """The tree with every `path`'s query string hidden, there and in the node's name
    (`stream 1 GET /search?[redacted]`); nodes without one are returned as they are."""
    out = node
    path = node.get("path")
    if isinstance(path, str) and "?" in path:
        bare = path.partition("?")[0]
        out = {**node, "path": hide_query(path)}
        name: str = node["name"]
        # The name may hold the path cut short (stream names keep 80 characters).
        at = name.find(bare + "?")
        if at >= 0:
            out["name"] = name[: at + len(bare)] + HIDDEN_QUERY
    children = node.get("children")
    if children:
        hidden = [_hide_queries(child) for child in children]
        if any(new is not old for new, old in zip(hidden, children, strict=True)):
            out = {**out, "children": hidden}
    return out
