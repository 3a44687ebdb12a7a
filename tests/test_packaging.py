"""The wheel works outside the source tree, and a third-party plugin package trains.

Uses the fuse-align wheel and the example plugins (docs/examples/), installed
into a fresh venv by the `plugin_venv` fixture (heavy dependencies borrowed from the test
environment through a .pth file, so nothing is downloaded), then drives that venv's `fuse`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_ok, write_recipe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_wheel_imports_from_the_venv_not_the_source_tree(plugin_venv):
    out = run_ok(plugin_venv / "bin" / "python", "-c",
               "import fuse, fuse.cli, fuse.eval.retrieval, fuse.plugins.timm_vision; print(fuse.__file__)",
               cwd="/").stdout
    assert str(plugin_venv) in out and str(ROOT) not in out


def test_the_wheel_builds_without_warnings_and_carries_its_data(plugin_venv):
    """Class lists and prompt templates are listed package data (no setuptools warning about unlisted
    packages on a user's screen), they reach the installed wheel, and fuse.api (fuse.base's old name) imports."""
    log = (plugin_venv.parent / "fuse-build.log").read_text()
    assert "absent from the `packages` configuration" not in log and "BuildBackendWarning" not in log
    out = run_ok(plugin_venv / "bin" / "python", "-c",
                 "import importlib.resources as r, fuse.api.errors as old, fuse.base.errors as new; "
                 "d = r.files('fuse.plugins.datasets'); "
                 "print(len((d / 'classes' / 'cifar10.txt').read_text().split(chr(10))), "
                 "len(list((d / 'templates').iterdir())) > 0, old is new)", cwd="/").stdout.split()
    assert out == ["10", "True", "True"] or out[1:] == ["True", "True"] and int(out[0]) >= 10


def test_fuse_plugins_in_the_venv_lists_builtins_and_the_third_party_encoder(plugin_venv):
    rows = json.loads(run_ok(plugin_venv / "bin" / "fuse", "plugins", "--json", cwd="/").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["timm"]["package"] == "fuse-align 0.1.0"
    assert by_name["char-ngrams"]["package"] == "fuse-char-ngrams 0.1.0"
    assert by_name["char-ngrams"]["modalities"] == ["text"]


def test_third_party_encoder_trains_and_exports(plugin_venv, tmp_path, shapes_data):
    recipe = {
        "name": "third-party", "device": "cpu", "output_dir": str(tmp_path / "run"), "embed_dim": 16,
        "modalities": {
            "image": {"encoder": {"name": "timm", "options": {"model": "test_efficientnet", "pretrained": False}},
                      "head": {"name": "linear"}},
            "text": {"encoder": {"name": "char-ngrams", "options": {"dim": 256}}, "head": {"name": "linear"}},
        },
        "data": {"train": str(shapes_data["train"]), "val": str(shapes_data["val"]),
                 "cache_dir": str(tmp_path / "cache")},
        "optim": {"lr": 3e-3},
        "train": {"batch_size": 8, "epochs": 8, "eval_every": 4},
    }
    path = write_recipe(tmp_path / "r.yaml", recipe)
    run_ok(plugin_venv / "bin" / "fuse", "train", path, cwd=tmp_path)
    results = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert results["after"]["text_to_image/R@1"] > results["before"]["text_to_image/R@1"]
    config = json.loads((tmp_path / "run" / "export" / "fuse_model.json").read_text())
    assert config["modalities"]["text"]["encoder"]["package"] == "fuse-char-ngrams 0.1.0"
