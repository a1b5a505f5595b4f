"""The package's import graph has no circles: a lower module never knows a higher one.

Every import counts, wherever it stands: at module level, under ``TYPE_CHECKING`` and
inside functions. A circle of type-only imports is still a lower module knowing a
higher one's type; give the lower module a small Protocol instead, or move the shared
type down (see docs/architecture.md).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import tasker_resilience

PACKAGE = "tasker_resilience"
ROOT = Path(tasker_resilience.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in ROOT.rglob("*.py")}


def _imported(module: str, tree: ast.AST) -> Iterator[str]:
    """The package's modules that ``tree`` imports (``from pkg import mod`` is ``pkg.mod``)."""
    is_package = MODULES[module].name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            names = [f"{source}.{alias.name}" for alias in node.names]
            names = [name if name in MODULES else source for name in names]
        else:
            continue
        yield from (name for name in names if name in MODULES and name != module)


def import_graph() -> dict[str, set[str]]:
    return {
        module: set(_imported(module, ast.parse(path.read_text(encoding="utf-8"))))
        for module, path in MODULES.items()
    }


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_the_package_has_no_import_circles() -> None:
    graph = import_graph()
    # The public package imports its parts; the parts never import the package back.
    graph[PACKAGE] = set()
    assert find_circles(graph) == []


def test_the_circle_finder_sees_a_type_only_circle() -> None:
    # The check itself must be able to fail: a two-module circle through TYPE_CHECKING.
    lower = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from tasker_resilience._resilience import Resilience\n"
    )
    graph = import_graph()
    graph[PACKAGE] = set()
    graph["tasker_resilience._operations.health"] |= set(
        _imported("tasker_resilience._operations.health", lower)
    )
    graph["tasker_resilience._resilience"].add("tasker_resilience._operations.health")
    assert ["tasker_resilience._operations.health", "tasker_resilience._resilience"] in (
        find_circles(graph)
    )


def test_nothing_in_the_package_imports_the_package_itself() -> None:
    graph = import_graph()
    importers = sorted(m for m, targets in graph.items() if PACKAGE in targets and m != PACKAGE)
    assert importers == []


# The rooms from the bottom up (docs/architecture.md). A module may import its own room
# and the rooms below it; the few edges that reach up are listed, each with its reason.
LAYERS = (
    "tasker_resilience._errors",
    "tasker_resilience._config",
    "tasker_resilience._breakers",
    "tasker_resilience._cache",
    "tasker_resilience._resilience",
    "tasker_resilience._operations",
    "tasker_resilience.testing",
    "tasker_resilience.contrib",
)
UPWARD_EDGES = {
    # The decorators are applied at import time and find the process-wide Resilience on
    # their first call (dogpile's region pattern): they sit in their rooms by topic, but
    # read the composition root.
    ("tasker_resilience._breakers.guard", "tasker_resilience._resilience"),
    ("tasker_resilience._cache.cached", "tasker_resilience._resilience"),
    # Resilience.health() builds the report; health.py reads it through a Protocol.
    ("tasker_resilience._resilience", "tasker_resilience._operations.health"),
    # `drill --fault` stages its faults with the public FaultProxy users get (a leaf
    # module: the standard library only, so no circle can pass through it).
    ("tasker_resilience._operations.drill.fault_drill", "tasker_resilience.testing.fault_proxy"),
}


def _layer(module: str) -> int:
    return max(
        (i for i, room in enumerate(LAYERS) if module == room or module.startswith(room + ".")),
        default=-1,
    )


def test_imports_point_down_the_rooms() -> None:
    upward = {
        (module, target)
        for module, targets in import_graph().items()
        for target in targets
        if _layer(module) >= 0 and _layer(target) > _layer(module)
    }
    assert upward <= UPWARD_EDGES, sorted(upward - UPWARD_EDGES)
