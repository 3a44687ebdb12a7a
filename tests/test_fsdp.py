"""train.fsdp: torchrun with 2 CPU processes (gloo) shards an unfrozen text encoder with FSDP2 and
takes the same steps as one process on the global batch; checkpoints hold whole tensors, and a
run resumed from one continues bit-identically (same rank layout)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import make_tiny_text_model, tiny_recipe, write_recipe

pytestmark = pytest.mark.slow

TORCHRUN = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port", "29541"]


def _train(cmd, recipe, *extra):
    result = subprocess.run([*cmd, "-m", "fuse", "train", str(recipe), *extra], capture_output=True, text=True,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def _recipe(tmp_path, name, text_model, data, **extra):
    """An unfrozen BERT text tower (no dropout: ranks draw other masks than one process), grad clipping
    (the norm spans sharded and replicated gradients) and a constant learning rate after warmup."""
    common = {"train.batch_size": 8, "train.max_steps": 3, "data.val": None, "optim.weight_decay": 0.0,
              "optim.grad_clip": 0.5, "optim.encoder_lr": 3e-3, "modalities.text.encoder.frozen": False,
              "schedule.min_lr_ratio": 1.0, "train.fsdp": True, **extra}
    return write_recipe(tmp_path / f"{name}.yaml", tiny_recipe(tmp_path / name, text_model, data, **common))


def _weights(tmp_path, name):
    files = sorted((tmp_path / name / "run" / "checkpoints").glob("epoch-*.safetensors"))
    return load_file(str(files[-1]))


@pytest.fixture(scope="module")
def still_bert(tmp_path_factory) -> Path:
    return make_tiny_text_model(tmp_path_factory.mktemp("still-bert"), dropout=0.0)


@pytest.mark.parametrize("settings", [{}, {"train.grad_accum": 2, "train.chunk_size": 2}],
                         ids=["plain", "accumulated-gradcache"])
def test_fsdp_two_ranks_take_the_steps_of_one_process(tmp_path, still_bert, shapes_data, settings):
    """With grad_accum, FSDP reduce-scatters only in a step's last micro-batch; GradCache runs several
    backward passes through the sharded encoder per micro-batch."""
    one = _train([sys.executable], _recipe(tmp_path, "one", still_bert, shapes_data, **settings))
    assert "train.fsdp has no effect: one process" in one
    two = _train(TORCHRUN, _recipe(tmp_path, "two", still_bert, shapes_data, **settings))
    assert two.count("text encoder: fully sharded (FSDP) over 2 ranks, 2 blocks") == 1  # only rank 0 prints
    a, b = _weights(tmp_path, "one"), _weights(tmp_path, "two")
    assert a.keys() == b.keys() and any(k.startswith("model.encoders.text.") for k in a)
    assert all(a[k].shape == b[k].shape for k in a)  # whole tensors in the checkpoint, not one rank's shard
    start = load_file(str(still_bert / "model.safetensors"))
    moved = [k for k in a if k.startswith("model.encoders.text.model.") and
             not torch.equal(a[k], start[k.removeprefix("model.encoders.text.model.")])]
    assert len(moved) > 10  # the encoder trained
    # Adam's steps are lr * m / (sqrt(v) + eps): elements whose gradient is ~0 may flip sign with the
    # summation order, so compare the bulk exactly and bound the rest by the steps' size.
    diff = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a])
    print(f"max {diff.max():.2e}, share equal {(diff < 1e-6).float().mean():.4f}")
    assert (diff < 1e-6).float().mean() > 0.99 and diff.max() <= 3 * 2 * 3e-3
    # The export holds the plain (whole) encoder that rank 0 rebuilt after training.
    exported = load_file(str(tmp_path / "two" / "run" / "export" / "text" / "encoder" / "model.safetensors"))
    for k, v in exported.items():
        assert torch.equal(v, b[f"model.encoders.text.model.{k}"]), k


def test_fsdp_resume_continues_bit_identically(tmp_path, still_bert, shapes_data):
    """Sharded AdamW moments are gathered whole into state.pt and re-sharded on resume."""
    _train(TORCHRUN, _recipe(tmp_path, "straight", still_bert, shapes_data, **{"train.max_steps": 4}))
    half = _recipe(tmp_path, "resumed", still_bert, shapes_data, **{"train.max_steps": 2})
    _train(TORCHRUN, half)
    out = _train(TORCHRUN, half, "--resume", "train.max_steps=4")
    assert "resuming" in out
    a, b = _weights(tmp_path, "straight"), _weights(tmp_path, "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
