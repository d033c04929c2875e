"""The package's imports go one way: no cycle inside ``zoo/``, counting imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import zoo

ROOT = Path(zoo.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(target: str, modules: set[str]) -> str | None:
    """The zoo module ``target`` names (``zoo.a.b.c`` may be the attribute ``c`` of module ``zoo.a.b``)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def _executed_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (annotations only, never run)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def import_graph() -> dict[str, set[str]]:
    """``module -> zoo modules it imports``, at module level and inside functions (not ``if TYPE_CHECKING:``)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _executed_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{anchor}.{base}" if base else anchor
                targets = [f"{base}.{a.name}" for a in node.names]
            for target in targets:
                if target.split(".")[0] == "zoo" and (dep := _resolve(target, modules)) and dep != name:
                    deps.add(dep)
        graph[name] = deps
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def _package_init_edges(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Importing ``zoo.a.b`` runs ``zoo/a/__init__.py`` first: a package's ``__init__`` importing its own
    submodules is not a cycle, so edges from a module to its parent packages are dropped."""
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_finder_sees_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_graph_counts_function_level_imports() -> None:
    graph = import_graph()
    assert "zoo.registry" in graph["zoo.builder"]
    assert "zoo.weights.manifest" in graph["zoo.preprocess"]  # imported inside a function
    assert "zoo.weights.manifest" not in graph["zoo.weights.errors"]  # only under TYPE_CHECKING


def test_no_import_cycle_inside_zoo() -> None:
    cycles = find_cycles(_package_init_edges(import_graph()))
    assert not cycles, "import cycles inside zoo/: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_weights_never_import_the_builder_or_families() -> None:
    graph = import_graph()
    bad = sorted(
        f"{m} -> {d}"
        for m, deps in graph.items()
        if m.startswith("zoo.weights")
        for d in deps
        if d == "zoo.builder"
        or (d.startswith("zoo.models.") and d not in ("zoo.models._contract", "zoo.models._helpers"))
    )
    assert not bad, "zoo.weights imports code above it: " + ", ".join(bad)
