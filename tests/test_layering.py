"""Imports point one way, down the layers the README draws; the library never imports the server;
no file imports itself back through others (a cycle), and no two top-level packages import each
other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tunelab"
LAYERS = {
    0: ["data", "models", "evaluation", "db", "settings", "logs", "contract"],
    1: ["training", "security", "hardware"],
    2: ["strategies", "artifacts", "billing"],
    3: ["engine"],
    4: ["jobs", "serving", "services", "cli", "sdk"],
    5: ["api"],
    6: ["web"],
    7: ["server"],
}
LEVEL = {name: level for level, names in LAYERS.items() for name in names}


def _top(module_path: Path) -> str:
    rel = module_path.relative_to(PKG).parts
    return rel[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    rel = path.relative_to(PKG).parts
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[:-1])[: len(rel) - node.level]
                parts = base + (node.module.split(".") if node.module else [])
                if parts:
                    out.add(parts[0])
                elif node.names:        # `from .. import x` at the package root
                    out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("tunelab."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("tunelab."))
    return out


MODULES = sorted(p for p in PKG.rglob("*.py") if "migrations" not in p.parts and p.name != "__main__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_point_down(path):
    me = _top(path)
    if me == "__init__.py" or me not in LEVEL:
        assert me in LEVEL or me == "__init__", f"{me} is in no layer: add it to LAYERS and the README"
        return
    upward = {m for m in _imports(path) if m in LEVEL and LEVEL[m] > LEVEL[me]}
    assert not upward, f"{path.relative_to(PKG)} ({me}, layer {LEVEL[me]}) imports up: {upward}"


# ---- the file-level import graph ------------------------------------------------------------------
# Every `import` and `from ... import` anywhere in a file (inside functions too: an import deferred
# to call time still ties the two files together). An edge goes to the file that holds the module:
# a package is its __init__.py, `from pkg import name` is pkg/name.py when that is a submodule, and
# `import a.b.c` is the deepest of a/b/c that is a file. Parent packages imported on the way are not
# counted (each __init__.py would otherwise sit in a cycle with every module it re-exports).
def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for the package whose folder is `root`."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join([root.name, *parts])] = path
    return out


def import_graph(root: Path) -> dict[Path, set[Path]]:
    """Each file of the package at `root` -> the package's files it imports."""
    files = module_files(root)
    package = root.name
    graph: dict[Path, set[Path]] = {path: set() for path in files.values()}
    for name, path in files.items():
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            wanted = []
            if isinstance(node, ast.Import):
                wanted = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    if node.level - 1 >= len(here):
                        continue                 # above the package: not ours
                    base = ".".join(here[: len(here) - (node.level - 1)] + ([node.module] if node.module else []))
                else:
                    base = node.module
                wanted = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in wanted:
                if target != package and not target.startswith(package + "."):
                    continue
                while target not in files:
                    target = target.rpartition(".")[0]
                if files[target] != path:
                    graph[path].add(files[target])
    return graph


def find_cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """The strongly connected components with more than one file (Tarjan), each sorted."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    on_stack: set[Path] = set()
    found = []

    def visit(v: Path) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
    return sorted(found)


def describe(cycle: list[Path], graph: dict[Path, set[Path]], root: Path) -> str:
    inside = set(cycle)
    edges = [f"{a.relative_to(root)} -> {b.relative_to(root)}" for a in cycle for b in sorted(graph[a] & inside)]
    return f"{', '.join(str(p.relative_to(root)) for p in cycle)}\n      " + "\n      ".join(edges)


def two_way_packages(graph: dict[Path, set[Path]], root: Path) -> list[tuple[str, str]]:
    """Pairs of top-level packages (or modules) of `root` that each import something of the other."""
    def top(path: Path) -> str:
        return path.relative_to(root).parts[0].removesuffix(".py")

    edges = {(top(a), top(b)) for a, targets in graph.items() for b in targets if top(a) != top(b)}
    return sorted((a, b) for a, b in edges if a < b and (b, a) in edges)


def test_no_import_cycles():
    graph = import_graph(PKG)
    cycles = find_cycles(graph)
    assert not cycles, f"{len(cycles)} import cycle(s) among tunelab's files:\n" + \
        "\n".join(f"  - {describe(c, graph, PKG)}" for c in cycles)


def test_no_two_packages_import_each_other():
    graph = import_graph(PKG)
    pairs = two_way_packages(graph, PKG)
    lines = []
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            lines += [f"    {p.relative_to(PKG)} -> {q.relative_to(PKG)}" for p in sorted(graph) for q in sorted(graph[p])
                      if p.relative_to(PKG).parts[0].removesuffix(".py") == x
                      and q.relative_to(PKG).parts[0].removesuffix(".py") == y]
    assert not pairs, "top-level packages that import each other: " + \
        ", ".join(f"{a} <-> {b}" for a, b in pairs) + "\n" + "\n".join(lines)


def test_cycle_finder_finds_a_planted_cycle(tmp_path):
    """The checker itself, once: a throwaway package where a.py and b.py import each other (one
    relative, at the top; one absolute, inside a function), and c.py imports a without a cycle."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    import pkg.a\n")
    (pkg / "c.py").write_text("from .a import b\n")
    graph = import_graph(pkg)
    assert graph[pkg / "c.py"] == {pkg / "a.py"}
    assert find_cycles(graph) == [[pkg / "a.py", pkg / "b.py"]]
    assert "a.py -> b.py" in describe(find_cycles(graph)[0], graph, pkg)

