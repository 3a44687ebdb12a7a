"""The package map holds: core's packages import downwards only, and no module imports itself in a loop.

Built from the source (every import statement, function-level ones included), so a new upward import
or loop fails here with the offending line, not in a reader's head. The layers, bottom to top, are
the order data flows: the plugin API, recipe -> plan, data, evaluation, the model and its uses,
training, the CLI. docs/architecture.md draws the same map.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"
LAYERS = ["base", "recipes", "data", "eval", "model", "training", "cli"]
# Modules above every layer: the `fuse` facade, `python -m fuse`, and an old import path kept for exports.
FACADES = {"fuse", "fuse.api", "fuse.__main__", "fuse.sentence_transformers"}


def _modules(root: Path = CORE, package: str = "fuse") -> dict[str, Path]:
    mods = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("").parts
        name = ".".join((package, *rel)).removesuffix(".__init__")
        mods[name] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported fuse module, line) for every import in the file, resolved to the deepest known module."""
    is_pkg = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.append((t, node.lineno))
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _graph(mods: dict[str, Path]) -> dict[str, list[tuple[str, int]]]:
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def upward_imports(mods: dict[str, Path], root: Path = CORE) -> list[str]:
    bad = []
    for m, edges in _graph(mods).items():
        if m in FACADES:
            continue
        here = _layer(m)
        if here is None:
            bad.append(f"{mods[m].relative_to(root.parent)}: module outside the layers {LAYERS}")
            continue
        for t, line in edges:
            there = _layer(t)
            if t in FACADES or there is None or LAYERS.index(there) > LAYERS.index(here):
                bad.append(f"{mods[m].relative_to(root.parent)}:{line}: {m} ({here}) imports {t} ({there or 'a facade'})")
    return bad


def import_cycles(mods: dict[str, Path]) -> list[list[str]]:
    """Strongly connected groups of modules (package __init__ re-exports left out: they only gather)."""
    edges = defaultdict(set)
    for m, targets in _graph(mods).items():
        if mods[m].name != "__init__.py":
            edges[m] |= {t for t, _ in targets if mods[t].name != "__init__.py"}
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(mods):
        if v not in index:
            visit(v)
    return cycles


def test_core_packages_import_downwards_only():
    assert upward_imports(_modules()) == []


def test_no_import_loops_in_core_or_plugins():
    assert import_cycles(_modules()) == []
    assert import_cycles(_modules(ROOT / "plugins", "fuse.plugins")) == []


def test_every_package_says_what_it_owns_and_may_import():
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((CORE / layer / "__init__.py").read_text())) or ""
        assert doc.strip(), f"core/{layer}/__init__.py has no docstring"
        if layer not in ("base", "cli"):
            assert "import" in doc, f"core/{layer}/__init__.py does not say what it may import"


@pytest.mark.parametrize("source, expected", [
    ("from fuse.training.loop import train\n", "imports fuse.training.loop (training)"),
    ("def f():\n    from fuse.model.aligned import aligned\n", "imports fuse.model.aligned (model)"),
])
def test_the_check_sees_upward_imports_including_function_level(tmp_path, source, expected):
    """The checker itself: a data module reaching up into training or model is reported."""
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "training" / "loop.py").write_text("")
    (tmp_path / "model" / "aligned.py").write_text("")
    (tmp_path / "data" / "store.py").write_text(source)
    bad = upward_imports(_modules(tmp_path), tmp_path)
    assert len(bad) == 1 and expected in bad[0]


def test_the_check_sees_loops(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "a.py").write_text("from fuse.base import b\n")
    (tmp_path / "base" / "b.py").write_text("def f():\n    from fuse.base.a import x\n")
    assert import_cycles(_modules(tmp_path)) == [["fuse.base.a", "fuse.base.b"]]
