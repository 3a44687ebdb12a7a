"""The two offline quickstart recipes, run through the CLI as users run them, on a slice of
their real data (the full runs are `make demo` and docs/audio.md)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fuse.cli import cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["quickstart", "audio_quickstart"])
def test_offline_quickstart_learns_on_a_slice(tmp_path, name):
    args = ["train", f"recipes/{name}.yaml", f"output_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}",
            "data.dataset.options.max_items=160", "data.dataset.options.val_fraction=0.3", "train.batch_size=64",
            "train.epochs=10", "train.eval_every=10"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert res["after"]["mean/R@5"] > res["before"]["mean/R@5"] + 10, res
    assert (tmp_path / "run" / "metrics.png").stat().st_size > 0
    assert (tmp_path / "run" / "export" / "fuse_model.json").exists()
