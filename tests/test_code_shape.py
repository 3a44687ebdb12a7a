"""The code stays one a reader can hold: short functions, a short training loop, no reaching into
another module's private members. Measured from the source with ast, so a long function fails here
with its name and length rather than in a reviewer's head."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"
MAX_FUNCTION_LINES = 80
MAX_LOOP_LINES = 300


def _sources() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(CORE.rglob("*.py"))}


def _functions(tree: ast.Module):
    """Every function and method, nested ones too, with its length in lines (decorators excluded)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.lineno, node.end_lineno - node.lineno + 1


def test_no_core_function_is_longer_than_80_lines():
    long = [f"{p.relative_to(ROOT)}:{line} {name} ({n} lines)"
            for p, tree in _sources().items() for name, line, n in _functions(tree) if n > MAX_FUNCTION_LINES]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: " + "; ".join(long)


def test_the_training_loop_module_fits_in_300_lines():
    n = len((CORE / "training" / "loop.py").read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LOOP_LINES, f"core/training/loop.py has {n} lines (at most {MAX_LOOP_LINES})"


def _third_party_names(tree: ast.Module) -> set[str]:
    """Names a module binds to other libraries (``import torch``): their private members are theirs."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if not a.name.startswith("fuse")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and not (node.module or "").startswith("fuse"):
            names |= {a.asname or a.name for a in node.names}
    return names


def _root(node: ast.expr) -> str | None:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def test_no_module_uses_another_modules_private_members():
    found = []
    for p, tree in _sources().items():
        theirs = _third_party_names(tree) | {"self", "cls"}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fuse"):
                found += [f"{p.relative_to(ROOT)}:{node.lineno} imports {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if _root(node) not in theirs:
                    found.append(f"{p.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert not found, "private members used across modules (make them public, with a docstring): " + "; ".join(found)
