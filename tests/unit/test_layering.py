"""The packages form layers without import cycles.

Every module of registry, training and engine is parsed (``ast``: nothing is imported, so no
import side effects) and each ``import``/``from … import`` of a tenantry module becomes an
edge, wherever it sits (module level or inside a function: a lazy import is still a
dependency). The test fails on

* an upward import: a module may import its own group or a group of a lower layer, never a
  higher layer nor a sibling group of its own layer (see ``LAYERS``);
* a cycle between modules (imports under ``if TYPE_CHECKING:`` do not run and are left out
  of the cycle check; they still count for the layers).

Known exceptions live in two short allow-lists below, each with the issue that removes it;
an entry the code no longer needs fails the test too, so the lists only shrink.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("registry", "training", "engine")

LAYERS: tuple[tuple[str, ...], ...] = (
    ("registry",),                                     # the store: imports no other package
    ("training",),                                     # trains and publishes into the registry
    ("engine", "engine.settings", "engine.metrics",
     "engine.forest"),                                 # engine's shared ground, model format
    ("engine.serving",),                               # model loading, cache, model host, API
    ("engine.ingress", "engine.shadow", "engine.monitor", "engine.batch",
     "engine.loadtest"),                               # subsystems around serving, siblings
    ("engine.console",),                               # reads the registry and shadow tables
    ("engine.serving.app",),                           # composition: the Serve app...
    ("engine.serving.launch",),                        # ...and what deploys it
    ("engine.cli",),                                   # the command line: prints and exits
)
"""Groups, bottom layer first. A module belongs to the group of its longest matching prefix."""

UPWARD_ALLOWED: dict[tuple[str, str], str] = {}
"""Known upward imports (importer, imported) and why they are still here."""

CYCLE_EDGES_ALLOWED: dict[tuple[str, str], str] = {}
"""Known edges that close a cycle (importer, imported); the check runs without them."""


@dataclass(frozen=True)
class Edge:
    """One import of a tenantry module by another."""

    importer: str
    imported: str
    line: int
    type_only: bool


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in MODULES:  # `import engine.x.y` binds engine.x.y
                name = name.rpartition(".")[0]
            if name:
                yield name
        return
    base = node.module or ""
    if node.level:  # relative: resolve against this module's package
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package.pop()
        package = package[:len(package) - (node.level - 1)]
        base = ".".join(package + ([base] if base else []))
    for alias in node.names:
        if f"{base}.{alias.name}" in MODULES:  # `from pkg import submodule`
            yield f"{base}.{alias.name}"
        elif base in MODULES:
            yield base


def _edges(module: str, node: ast.AST, type_only: bool = False) -> Iterator[Edge]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            for target in _targets(module, child):
                if target != module:
                    yield Edge(module, target, child.lineno, type_only)
        inner = type_only or (isinstance(child, ast.If) and _is_type_checking(child))
        yield from _edges(module, child, inner)


def all_edges() -> list[Edge]:
    """Every import between tenantry modules."""
    return [e for m, path in MODULES.items() for e in _edges(m, ast.parse(path.read_text()))]


def group_of(module: str) -> tuple[int, str]:
    """(layer index, group) of a module: its longest matching prefix in ``LAYERS``."""
    best: tuple[int, str] | None = None
    for index, groups in enumerate(LAYERS):
        for group in groups:
            if (module == group or module.startswith(group + ".")) and \
                    (best is None or len(group) > len(best[1])):
                best = (index, group)
    assert best is not None, f"{module} is in no layer: add its package to LAYERS"
    return best


def upward(edge: Edge) -> bool:
    """Whether ``edge`` goes to a higher layer or to a sibling group of the same layer."""
    (low, mine), (high, theirs) = group_of(edge.importer), group_of(edge.imported)
    return mine != theirs and high >= low


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for e in edges:
        graph[e.importer].add(e.imported)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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
    return found


EDGES = all_edges()


def test_every_module_is_parsed_and_in_a_layer() -> None:
    assert {"registry.errors", "training.job", "engine.cli", "engine.serving.host",
            "engine.forest.compiled"} <= set(MODULES)
    for module in MODULES:
        group_of(module)


def test_no_upward_imports() -> None:
    found = sorted({f"{e.importer}:{e.line} imports {e.imported}" for e in EDGES
                    if upward(e) and (e.importer, e.imported) not in UPWARD_ALLOWED})
    assert not found, "upward imports (see LAYERS in this test):\n" + "\n".join(found)


def test_no_import_cycles() -> None:
    runtime = [e for e in EDGES
               if not e.type_only and (e.importer, e.imported) not in CYCLE_EDGES_ALLOWED]
    assert cycles(runtime) == []


def test_allow_lists_hold_only_what_the_code_still_needs() -> None:
    present = {(e.importer, e.imported) for e in EDGES}
    stale = (set(UPWARD_ALLOWED) | set(CYCLE_EDGES_ALLOWED)) - present
    assert not stale, f"fixed: remove {sorted(stale)} from the allow-lists"
    assert all(upward(Edge(a, b, 0, False)) for a, b in UPWARD_ALLOWED)
    runtime = [e for e in EDGES if not e.type_only]
    for edge in CYCLE_EDGES_ALLOWED:
        assert any(edge[0] in c and edge[1] in c for c in cycles(runtime)), \
            f"{edge} closes no cycle any more: remove it from CYCLE_EDGES_ALLOWED"


def test_the_checks_can_fail() -> None:
    """The rules catch what they are for (so a green run means something)."""
    assert upward(Edge("registry.ids", "engine.cli", 1, False))
    assert upward(Edge("training.job", "engine.serving.model", 1, False))
    assert upward(Edge("engine.serving.api", "engine.shadow", 1, False))
    assert upward(Edge("engine.shadow.mirror", "engine.monitor.log", 1, False))
    assert not upward(Edge("engine.serving.app", "engine.shadow", 1, False))
    assert upward(Edge("engine.forest.stacked", "engine.serving.model", 1, False))
    assert not upward(Edge("engine.batch.predict", "engine.forest", 1, False))
    assert not upward(Edge("engine.cli.app", "registry", 1, False))
    made_up = [Edge("registry.ids", "registry.types", 1, False),
               Edge("registry.types", "registry.ids", 1, False)]
    assert cycles(made_up) == [["registry.ids", "registry.types"]]
