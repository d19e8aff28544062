"""The package's layers, read from the modules' own imports (all of them:
module level, inside functions, and under TYPE_CHECKING): no import circle,
and no module imports from a layer above its own (docs/architecture.md,
"Layers")."""

from __future__ import annotations

import ast
from pathlib import Path

import selectorkv

ROOT = Path(selectorkv.__file__).parent

# Lowest first. A module may import from its own layer and those below it.
LAYERS = [
    ("selectorkv",),  # the package itself: its version, nothing else
    ("selectorkv.reactor",),
    ("selectorkv.http",),
    ("selectorkv.kv",),
    ("selectorkv.execution",),
    ("selectorkv.cluster",),
    ("selectorkv.config", "selectorkv.metrics", "selectorkv.server", "selectorkv.client"),
    ("selectorkv.lab", "selectorkv.lab.harness"),
    ("selectorkv.lab.load",),
    ("selectorkv.lab.studies",),
    ("selectorkv.lab.reports",),
    ("selectorkv.lab.cli",),
    ("selectorkv.cli", "selectorkv.__main__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, wherever the import is."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from pkg import mod" imports pkg and, if it is one, pkg.mod
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in known)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(path, known) - {name} for name, path in found.items()}


def layer(module: str) -> int:
    """The index of the most specific layer that holds ``module``."""
    best, depth = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    return best


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    assert [name for name in modules() if layer(name) < 0] == []


def test_no_import_circle() -> None:
    assert circles(graph()) == []


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = [
        f"{name} ({layer(name)}) imports {other} ({layer(other)})"
        for name, others in sorted(graph().items())
        for other in sorted(others)
        if layer(other) > layer(name)
    ]
    assert upward == []


def test_the_checks_see_a_circle_and_an_upward_import() -> None:
    """The checks themselves can fail."""
    assert circles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert layer("selectorkv.http.connection") > layer("selectorkv.reactor.transport")
    assert layer("selectorkv.lab.harness.nodes") > layer("selectorkv.server")
    assert "selectorkv.http.exchange" in graph()["selectorkv.http.connection"]
