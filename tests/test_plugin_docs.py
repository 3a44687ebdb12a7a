"""docs/plugins.md runs as pasted: its example package (pyproject entry point + module) registers an
encoder, the page's recipe dry-runs with it through the CLI, and the module is the one
docs/examples/fuse-char-ngrams ships (the package the suite pip-installs)."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path

import torch
from click.testing import CliRunner

import fuse
from fuse.cli import cli

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks() -> dict[str, str]:
    """The example's code blocks by the file name on their first line (``# NAME``) or ``console``."""
    first = PAGE.read_text().split("## Reference")[0]
    blocks = {}
    for lang, body in FENCE.findall(first):
        key = "console" if lang == "console" else body.splitlines()[0].removeprefix("# ").split(":")[0]
        blocks[key] = body
    return blocks


def test_the_example_comes_before_the_reference_tables():
    text = PAGE.read_text()
    assert text.index("## A complete encoder plugin") < text.index("| hook | registers |")
    assert set(_blocks()) == {"pyproject.toml", "fuse_char_ngrams.py", "char_ngrams.yaml", "console"}


def test_the_page_matches_the_shipped_example_package():
    blocks = _blocks()
    example = ROOT / "docs" / "examples" / "fuse-char-ngrams"
    assert blocks["fuse_char_ngrams.py"] == (example / "fuse_char_ngrams.py").read_text()
    page_toml, shipped = tomllib.loads(blocks["pyproject.toml"]), tomllib.loads((example / "pyproject.toml").read_text())
    assert page_toml["project"]["entry-points"]["fuse"] == shipped["project"]["entry-points"]["fuse"]
    assert page_toml["project"]["entry-points"]["fuse"] == {"char_ngrams": "fuse_char_ngrams"}
    assert page_toml["build-system"] == shipped["build-system"]  # the page's package builds as pasted


def test_the_page_runs_as_pasted(tmp_path):
    blocks = _blocks()
    (tmp_path / "fuse_char_ngrams.py").write_text(blocks["fuse_char_ngrams.py"])
    (tmp_path / "char_ngrams.yaml").write_text(blocks["char_ngrams.yaml"])
    command = blocks["console"].strip().removeprefix("$ ").split("#")[0].split()
    assert command == ["fuse", "train", "char_ngrams.yaml", "--dry-run"]
    spec = importlib.util.spec_from_file_location("fuse_char_ngrams_from_docs", tmp_path / "fuse_char_ngrams.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fuse.register_plugin(module, name="char_ngrams_from_docs")
    try:
        encoder = fuse.create("encoder", "char-ngrams", {"dim": 64})
        latents = encoder(encoder.preprocess(["a red apple", "a green pear"]))
        assert latents.shape == (2, 64) and torch.isfinite(latents).all() and latents.sum() > 0
        result = CliRunner().invoke(cli, ["train", str(tmp_path / command[2]), *command[3:]])
    finally:
        fuse.unregister_plugin(module)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])  # stderr carries the summary line
    text = json.dumps(report)
    assert '"char-ngrams"' in text and '"dim": 512' in text and '"lowercase": true' in text, text[:2000]
