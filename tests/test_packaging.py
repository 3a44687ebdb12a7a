"""The wheel works outside the source tree, and a third-party plugin package trains.

Builds the fuse-align wheel and the example plugin (docs/examples/fuse-char-ngrams), installs
both into a fresh venv (heavy dependencies such as torch are borrowed from the test
environment through a .pth file, so nothing is downloaded), then drives that venv's `fuse`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import write_recipe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*args, **kw):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    for src in (ROOT, ROOT / "docs" / "examples" / "fuse-char-ngrams"):
        _run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp / "dist", src)
    wheels = sorted((tmp / "dist").glob("*.whl"))
    assert {w.name.split("-")[0] for w in wheels} == {"fuse_align", "fuse_char_ngrams"}
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    _run(py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *wheels)
    site = _run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    # Borrow torch & co. A path added by a .pth file is not a site dir, so the test env's own
    # editable install of fuse (itself a .pth hook) stays inactive: `import fuse` is the wheel.
    (Path(site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_wheel_imports_from_the_venv_not_the_source_tree(fresh_venv):
    out = _run(fresh_venv / "bin" / "python", "-c",
               "import fuse, fuse.cli, fuse.eval.retrieval, fuse.plugins.timm_vision; print(fuse.__file__)",
               cwd="/").stdout
    assert str(fresh_venv) in out and str(ROOT) not in out


def test_fuse_plugins_in_the_venv_lists_builtins_and_the_third_party_encoder(fresh_venv):
    rows = json.loads(_run(fresh_venv / "bin" / "fuse", "plugins", "--json", cwd="/").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["timm"]["package"] == "fuse-align 0.1.0"
    assert by_name["char-ngrams"]["package"] == "fuse-char-ngrams 0.1.0"
    assert by_name["char-ngrams"]["modalities"] == ["text"]


def test_third_party_encoder_trains_and_exports(fresh_venv, tmp_path, shapes_data):
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
    _run(fresh_venv / "bin" / "fuse", "train", path, cwd=tmp_path)
    results = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert results["after"]["text_to_image/R@1"] > results["before"]["text_to_image/R@1"]
    config = json.loads((tmp_path / "run" / "export" / "fuse_model.json").read_text())
    assert config["modalities"]["text"]["encoder"]["package"] == "fuse-char-ngrams 0.1.0"
