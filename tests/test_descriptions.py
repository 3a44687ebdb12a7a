"""Descriptions that cannot drift: every file path and every ``fuse.x.y`` name that a docstring, a doc page or the
README mentions exists. (The package map's own description is checked against the import graph in test_layers.py.)"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [*ROOT.glob("core/**/*.py"), *ROOT.glob("plugins/**/*.py"), *ROOT.glob("benchmarks/*.py"),
         *ROOT.glob("docs/*.md"), ROOT / "README.md"]
PATH = re.compile(r"(?<![\w./-])((?:core|plugins|tests|benchmarks|recipes|docs)/[\w/.-]+\.(?:py|yaml|md|txt|json))")
OLD_PATH = re.compile(r"`(fuse/[\w/]+\.py)`")  # the import package's files by path: name the module instead
PLACEHOLDER = re.compile(r"\*|\b[A-Z]{2,}\b")  # benchmarks/results/NAME.json, docs/*.md
NAME = re.compile(r"`(fuse(?:\.[a-z_]\w*)+)")


def _resolves(name: str) -> bool:
    """``fuse.a.b.c``: the longest importable module prefix, then attributes."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attribute in parts[i:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


def stale_mentions(texts=TEXTS, root: Path = ROOT) -> list[str]:
    bad = []
    for path in texts:
        text = path.read_text()
        bad += [f"{path.relative_to(root)}: {m}" for m in PATH.findall(text) if not PLACEHOLDER.search(m) and not (root / m).exists()]
        bad += [f"{path.relative_to(root)}: {m} (write fuse.x.y)" for m in OLD_PATH.findall(text)
                if not (root / "core" / m.removeprefix("fuse/")).exists()]
        bad += [f"{path.relative_to(root)}: {m}" for m in NAME.findall(text)
                if not _resolves(m) and min(map(len, m.split("."))) > 1]  # fuse.x.y: a placeholder
    return bad


def test_every_mentioned_path_and_module_exists():
    assert stale_mentions() == []


def test_the_check_sees_a_stale_path_and_a_stale_name(tmp_path):
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text("The index (core/index.py) lives in `fuse.model.index`; see `fuse.model.indexes.build`.\n")
    assert stale_mentions([page], tmp_path) == ["docs/page.md: core/index.py", "docs/page.md: fuse.model.indexes.build"]
