"""The packages' imports form no cycle, nothing hides an import inside a function or under
TYPE_CHECKING to dodge one, and the data path's packages import only downstream of
themselves (docs/architecture.md, "The packages").

The imports are read from the source with ast, every one of them: at module level, inside
functions, under `if TYPE_CHECKING:`. Nothing is imported, so a cycle is found even where
Python would tolerate it at run time."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gateway"

#: Imports allowed inside a function, each with its reason. Anything else inside a function
#: (or under TYPE_CHECKING) fails: a cycle is broken where it is caused, not hidden. The CLI
#: loads what only one subcommand needs when that subcommand runs.
DEFERRED_IMPORTS = {
    ("gateway.cli", "gateway.xds.file_source"): "`validate`, with [dynamic] path only",
    ("gateway.cli", "gateway.observability.task_watch"): "`tasks` (trio-websocket)",
    ("gateway.cli", "gateway.server.supervisor"): "`serve`, `_worker`: worker_count",
    ("gateway.cli", "gateway.server.workers"): "`serve` with workers, `_worker`",
    ("gateway.cli", "gateway.demo"): "`demo-upstreams`",
    ("gateway.cli", "gateway.testing.command"): "`test`: the scenario engine",
}

#: The packages a request passes through, in data-flow order. Each may import the packages
#: after it (and those outside this list: config, observability, server state, errors), not
#: those before it: the upstream side (clusters/) never reaches back into the HCM (http/),
#: and the protocol layer both share imports neither.
DATA_PATH = [
    "gateway.listeners",
    "gateway.http",
    "gateway.router",
    "gateway.clusters",
    "gateway.protocol",
    "gateway.io",
]

#: Imports against the data path's order, each with its reason.
UPSTREAM_IMPORTS = {
    ("gateway.http", "gateway.listeners.network_filter"): (
        "the HCM is a network filter: it implements the listener's NetworkFilter and reads "
        "the ConnectionInfo the listener hands it"
    ),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The gateway module an imported name lives in: `gateway.a.b.Name` -> `gateway.a.b`."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """Every import of one module: (imported name, deferred?) with its line."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.is_package = is_package
        self.found: list[tuple[str, bool, int]] = []
        self._deferred = 0

    def _defer(self, node: ast.AST) -> None:
        self._deferred += 1
        self.generic_visit(node)
        self._deferred -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _defer

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._defer(node)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, self._deferred > 0, node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            package = self.module.split(".")
            if not self.is_package:
                package = package[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join(package + ([node.module] if node.module else []))
        for alias in node.names:
            # `from gateway.x import y` imports the module gateway.x.y if there is one.
            self.found.append((f"{base}.{alias.name}", self._deferred > 0, node.lineno))


def _imports() -> dict[str, list[tuple[str, bool, int]]]:
    found = {}
    for module, path in MODULES.items():
        visitor = _Imports(module, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        found[module] = visitor.found
    return found


IMPORTS = _imports()


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for module, found in IMPORTS.items():
        for name, _, _ in found:
            target = _resolve(name) if name.startswith("gateway") else None
            if target is not None and target != module:
                graph[module].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as [a, b, ..., a], or None."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        stack = [(start, iter(sorted(graph[start])))]
        path.append(start)
        on_path.add(start)
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif child in on_path:
                return [*path[path.index(child) :], child]
            elif child not in done:
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
                on_path.add(child)
    return None


def test_find_cycle_names_the_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    graph = _graph()
    cycles = []
    # Each cycle found is cut at its first edge, so the next search finds another one.
    while (cycle := find_cycle(graph)) is not None and len(cycles) < 20:
        cycles.append(" -> ".join(cycle))
        graph[cycle[0]].discard(cycle[1])
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_no_imports_deferred_to_dodge_a_cycle():
    hidden = [
        f"{MODULES[module].relative_to(ROOT)}:{line}: {name}"
        for module, found in IMPORTS.items()
        for name, deferred, line in found
        if deferred
        and (module, _resolve(name) if name.startswith("gateway") else name) not in DEFERRED_IMPORTS
    ]
    assert not hidden, (
        "imports inside a function or under TYPE_CHECKING (break the cycle at its cause, "
        "or add an optional dependency to DEFERRED_IMPORTS with its reason):\n  "
        + "\n  ".join(hidden)
    )


@pytest.mark.parametrize("allowed", sorted(DEFERRED_IMPORTS), ids=str)
def test_deferred_imports_allowlist_is_current(allowed):
    module, target = allowed
    assert any(
        deferred and (_resolve(name) if name.startswith("gateway") else name) == target
        for name, deferred, _ in IMPORTS.get(module, [])
    ), f"{module} no longer imports {target} in a function: drop it from DEFERRED_IMPORTS"


def _layer(module: str) -> int | None:
    for index, package in enumerate(DATA_PATH):
        if module == package or module.startswith(package + "."):
            return index
    return None


def test_data_path_imports_only_downstream():
    wrong = []
    for module, targets in _graph().items():
        layer = _layer(module)
        if layer is None:
            continue
        for target in sorted(targets):
            other = _layer(target)
            if other is None or other >= layer:
                continue
            if any(
                (module == src or module.startswith(src + ".")) and target == dst
                for src, dst in UPSTREAM_IMPORTS
            ):
                continue
            wrong.append(f"{module} -> {target}")
    assert not wrong, (
        f"imports against the data path's order ({' > '.join(DATA_PATH)}):\n  " + "\n  ".join(wrong)
    )


def test_the_protocol_layer_is_sans_io():
    """gateway/protocol/ holds the codecs and the wire vocabulary: no Trio, no sockets, so
    its tests drive it with bytes alone (docs/architecture.md)."""
    io_modules = ("trio", "socket", "ssl", "gateway.io")
    found = [
        f"{MODULES[module].relative_to(ROOT)}:{line}: {name}"
        for module, imported in IMPORTS.items()
        if module.startswith("gateway.protocol")
        for name, _, line in imported
        if any(name == m or name.startswith(m + ".") for m in io_modules)
    ]
    assert not found, "I/O imported by the protocol layer:\n  " + "\n  ".join(found)


def test_only_the_cli_imports_the_scenario_engine():
    """gateway/testing/ (`gateway test`, the pytest plugin) sits above everything: it builds
    the gateway from its parts. Nothing of the gateway imports it but the `test`
    subcommand, so the engine (and the plugin's pytest) never loads in a serving gateway."""
    found = [
        f"{MODULES[module].relative_to(ROOT)}:{line}: {name}"
        for module, imported in IMPORTS.items()
        if not module.startswith("gateway.testing") and module != "gateway.cli"
        for name, _, line in imported
        if name == "gateway.testing" or name.startswith("gateway.testing.")
    ]
    assert not found, "the scenario engine imported by the gateway:\n  " + "\n  ".join(found)
