"""torchrun with 2 CPU processes (gloo) takes the same step as one process on the global batch.

InfoNCE gathers embeddings across ranks with gradients and DDP averages the gradients, so
after one optimiser step the heads must match a single-process run with the same seed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_recipe, write_recipe

pytestmark = pytest.mark.slow


def _train(cmd, recipe):
    result = subprocess.run([*cmd, "-m", "fuse", "train", str(recipe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_two_rank_step_equals_single_process_step(tmp_path, tiny_text_model, shapes_data):
    common = {"train.max_steps": 1, "train.batch_size": 8, "data.val": None, "optim.weight_decay": 0.0}
    single = write_recipe(tmp_path / "single.yaml", tiny_recipe(tmp_path / "a", tiny_text_model, shapes_data, **common))
    double = write_recipe(tmp_path / "double.yaml", tiny_recipe(tmp_path / "b", tiny_text_model, shapes_data, **common))
    _train([sys.executable], single)
    torchrun = Path(sys.executable).with_name("torchrun")
    out = _train([str(torchrun), "--nproc_per_node", "2", "--master_port", "29533"], double)
    assert out.count("batch 4x2x1") == 1  # only rank 0 prints
    a = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "epoch-001.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "checkpoints" / "epoch-001.safetensors"))
    assert a.keys() == b.keys()
    # Adam's first step is lr * g / (|g| + eps): elements whose gradient is ~0 may flip sign
    # with the summation order, so compare the bulk exactly and bound the rest by 2 * lr.
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    print(f"max {diff.max():.2e}, share equal {(diff < 1e-6).float().mean():.4f}")
    assert (diff < 1e-6).float().mean() > 0.99 and diff.max() <= 2 * 3e-3 + 1e-6
