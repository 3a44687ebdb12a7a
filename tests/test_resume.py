"""`fuse train --resume`: an interrupted run continues exactly where its last epoch ended."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe
from safetensors.torch import load_file

from fuse.cli import cli

FUSEMIX = {"objectives": [{"name": "fusemix", "options": {"pairing": "permutation"}}]}  # RNG: lambda, partners
# The memory bank (16 rows: it wraps within an epoch) lives outside the weights, in state.pt.
DISTILL = {"objectives": [{"name": "infonce"}, {"name": "distillation", "weight": 0.5, "options": {"queue_size": 16}}],
           "teacher": {"modality": "image", "encoder": {"name": "timm", "options": {"model": "test_vit",
                                                                                    "pretrained": False}}}}


def _run(tmp_path, tiny_text_model, shapes_data, out, epochs, *flags, objectives=FUSEMIX):
    # A constant learning rate, so that 2 epochs then 2 more follow the same schedule as 4 at once.
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "output_dir": str(tmp_path / out), "train.epochs": epochs, "train.eval_every": 1,
        "schedule": {"warmup_steps": 0, "min_lr_ratio": 1.0}, **objectives})
    result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / f"{out}.yaml", r)), *flags])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("objectives", [FUSEMIX, DISTILL], ids=["fusemix", "infonce+distillation"])
def test_two_epochs_then_two_more_equal_four_at_once(tmp_path, tiny_text_model, shapes_data, objectives):
    _run(tmp_path, tiny_text_model, shapes_data, "straight", 4, objectives=objectives)
    _run(tmp_path, tiny_text_model, shapes_data, "resumed", 2, objectives=objectives)
    out = _run(tmp_path, tiny_text_model, shapes_data, "resumed", 4, "--resume", objectives=objectives)
    assert "resuming after epoch 2" in out
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "epoch-004.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "epoch-004.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = lambda run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["step"] for r in rows("straight")] == [r["step"] for r in rows("resumed")]  # no duplicated rows
    assert json.loads((tmp_path / "resumed" / "eval.json").read_text())["after"] == \
        json.loads((tmp_path / "straight" / "eval.json").read_text())["after"]


def test_resume_without_a_saved_state_is_a_clear_error(tmp_path, tiny_text_model, shapes_data):
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, output_dir=str(tmp_path / "never"))
    result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / "r.yaml", r)), "--resume"])
    assert result.exit_code == 2
    assert "Nothing to resume" in result.output and "state.pt not found" in result.output


def test_keep_checkpoints_bounds_the_epoch_files(tmp_path, tiny_text_model, shapes_data):
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{"train.epochs": 4, "train.keep_checkpoints": 2})
    assert CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / "k.yaml", r))]).exit_code == 0
    files = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert files == ["best.safetensors", "epoch-003.safetensors", "epoch-004.safetensors", "state.pt"]
    r["train"]["keep_checkpoints"] = None
    r["output_dir"] = str(tmp_path / "all")
    assert CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / "a.yaml", r))]).exit_code == 0
    assert len(list((tmp_path / "all" / "checkpoints").glob("epoch-*.safetensors"))) == 4


def test_pruning_orders_epochs_by_number_past_999(tmp_path):
    from fuse.training.loop import prune_checkpoints

    for epoch in (998, 999, 1000, 1001):
        (tmp_path / f"epoch-{epoch:03d}.safetensors").write_bytes(b"")
    prune_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-1000.safetensors", "epoch-1001.safetensors"]
