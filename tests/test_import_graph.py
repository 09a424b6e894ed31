"""The package's module-level imports form no circle (read from the source with ast, nothing is imported).

An edge A -> B means that importing A runs B: B is imported at A's top level (also inside `if`/`try` or a class
body, not inside a function), or B is a package whose `__init__` runs because A imports one of its modules.
A package's own `__init__` importing its submodules is not a circle (Python initialises the parent first).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "shiplib"


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for file in root.rglob("*.py"):
        parts = file.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _absolute(module: str, file: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if file.name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _top_level_imports(tree: ast.AST):
    """Import statements that run when the module is imported (not those inside functions)."""
    stack = list(ast.iter_child_nodes(tree))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: modules of the package that importing it runs}."""
    modules = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, file in modules.items():
        own_packages = set(_ancestors(module)) | {module}

        def add(target: str) -> None:
            while target and target not in modules:  # `from pkg.mod import name`: name is not a module
                target = target.rpartition(".")[0]
            for t in (*_ancestors(target), target):
                if t and t not in own_packages:
                    graph[module].add(t)

        for node in _top_level_imports(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == root.name:
                        add(alias.name)
            else:
                base = _absolute(module, file, node)
                if base.split(".")[0] != root.name:
                    continue
                add(base)
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        add(f"{base}.{alias.name}")
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One circle through a component, for the failure message."""
    start, members = component[0], set(component)
    path, seen = [start], {start}
    while True:
        nxt = sorted(graph[path[-1]] & members)
        step = next((n for n in nxt if n == start), None) or next((n for n in nxt if n not in seen), nxt[0])
        path.append(step)
        if step in seen:
            return " -> ".join(path)
        seen.add(step)


def test_no_circle_among_module_level_imports():
    graph = import_graph()
    found = circles(graph)
    assert not found, "import circles:\n" + "\n".join(_path(graph, c) for c in found)


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "shiplib.engine.run" in graph and "shiplib.data.folder" in graph
    assert "shiplib.data.tasks" in graph["shiplib.data.folder"]  # relative import resolved
    assert "shiplib.data" in graph["shiplib.engine.run"]  # a module of a package runs the package's __init__
    assert "shiplib.data.vtab1k" in graph["shiplib.data"]  # `from . import vtab1k` in the package __init__


@pytest.mark.parametrize("sources,expected", [
    ({"a.py": "from . import b\n", "b.py": "import pkg.a\n"}, [["pkg.a", "pkg.b"]]),
    ({"a.py": "def f():\n    from . import b\n", "b.py": "import pkg.a\n"}, []),  # a lazy import is no circle
    ({"__init__.py": "from .a import x\n", "a.py": "x = 1\n"}, []),  # a package importing its own module
    ({"a.py": "try:\n    from .b import y\nexcept ImportError:\n    pass\n", "b.py": "from .a import z\n"},
     [["pkg.a", "pkg.b"]]),
])
def test_circles_are_detected(tmp_path, sources, expected):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, text in sources.items():
        (pkg / name).write_text(text)
    assert circles(import_graph(pkg)) == expected
