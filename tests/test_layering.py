"""Imports point one way, down the layers the README draws; the library never imports the server."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tunelab"
LAYERS = {
    0: ["data", "models", "evaluation", "db", "settings", "logs", "contract"],
    1: ["training", "security"],
    2: ["strategies", "artifacts", "billing"],
    3: ["planning", "runner", "runner_generative", "comparison"],
    4: ["jobs", "services", "cli", "cli_admin", "cli_remote", "cli_billing", "cli_generative", "sdk"],
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
