"""Unfrozen encoders under torchrun (2 CPU processes, gloo): with train.fsdp the text encoder is
sharded with FSDP2, without it DDP holds it whole; either way the ranks take the same steps as
one process on the global batch. FSDP checkpoints hold whole tensors, and a run resumed from
one continues bit-identically (same rank layout)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_text_model, tiny_recipe, write_recipe
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

TORCHRUN = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", "--master_port", "29541"]


def _train(cmd, recipe, *extra):
    result = subprocess.run([*cmd, "-m", "fuse", "train", str(recipe), *extra], capture_output=True, text=True,
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def _recipe(tmp_path, name, text_model, data, **extra):
    """An unfrozen BERT text tower (no dropout: ranks draw other masks than one process), grad clipping
    (the norm spans sharded and replicated gradients), a constant learning rate after warmup, and
    validation (every rank runs the sharded encoder, then rank 0 the whole one rebuilt for export)."""
    common = {"train.batch_size": 8, "train.max_steps": 4, "optim.weight_decay": 0.0,
              "optim.grad_clip": 0.5, "optim.encoder_lr": 3e-3, "modalities.text.encoder.frozen": False,
              "schedule.min_lr_ratio": 1.0, "train.fsdp": True, **extra}
    return write_recipe(tmp_path / f"{name}.yaml", tiny_recipe(tmp_path / name, text_model, data, **common))


def _weights(root: Path):
    files = sorted((root / "run" / "checkpoints").glob("epoch-*.safetensors"))
    return load_file(str(files[-1]))


@pytest.fixture(scope="module")
def still_bert(tmp_path_factory) -> Path:
    return make_tiny_text_model(tmp_path_factory.mktemp("still-bert"), dropout=0.0)


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory, still_bert, shapes_data) -> tuple[Path, str]:
    """4 steps on 2 ranks with FSDP: its folder and rank 0's output (compared by both tests below)."""
    tmp = tmp_path_factory.mktemp("fsdp")
    return tmp / "two", _train(TORCHRUN, _recipe(tmp, "two", still_bert, shapes_data))


COMBINED = {"train.grad_accum": 2, "train.chunk_size": 2, "modalities.text.encoder.options.gradient_checkpointing": True,
            "objectives": [{"name": "infonce", "options": {"local_loss": True}}]}


@pytest.mark.parametrize("settings", [{}, COMBINED, {"train.fsdp": False}],
                         ids=["fsdp", "fsdp-accumulated-gradcache-checkpointed-local-loss", "ddp"])
def test_two_ranks_take_the_steps_of_one_process(tmp_path, still_bert, shapes_data, fsdp_run, settings):
    """With grad_accum, FSDP reduce-scatters only in a step's last micro-batch; GradCache runs several
    backward passes through the sharded encoder per micro-batch, here with its layers checkpointed
    and open_clip's local loss. Without FSDP, DDP must cope with
    BERT's pooler, which mean pooling leaves without a gradient."""
    one = _train([sys.executable], _recipe(tmp_path, "one", still_bert, shapes_data, **settings))
    if settings:
        two_dir, two = tmp_path / "two", _train(TORCHRUN, _recipe(tmp_path, "two", still_bert, shapes_data, **settings))
    else:
        two_dir, two = fsdp_run
    if settings.get("train.fsdp", True):
        assert "train.fsdp has no effect: one process" in one
        assert two.count("text encoder: fully sharded (FSDP) over 2 ranks, 2 blocks") == 1  # only rank 0 prints
    a, b = _weights(tmp_path / "one"), _weights(two_dir)
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
    assert (diff < 1e-6).float().mean() > 0.99 and diff.max() <= 4 * 2 * 3e-3
    # The export holds the plain (whole) encoder that rank 0 rebuilt after training, with the best epoch's weights.
    exported = load_file(str(two_dir / "run" / "export" / "text" / "encoder" / "model.safetensors"))
    best = load_file(str(two_dir / "run" / "checkpoints" / "best.safetensors"))
    for k, v in exported.items():
        assert torch.equal(v, best[f"model.encoders.text.model.{k}"]), k


@pytest.mark.parametrize("dropout", [0.0, None], ids=["dropout-off", "checkpoint-dropout"])
def test_ddp_equals_one_process_exactly_only_with_dropout_off(tmp_path, tiny_text_model, shapes_data, dropout):
    """The tiny BERT has dropout 0.1. hf-text `dropout: 0` turns it off and 2 DDP ranks take one process's
    steps (the bound of the test above); with the checkpoint's dropout each rank draws its own masks, so
    the encoder's weights part after the first step (equal only in expectation, which docs/scale.md says)."""
    settings = {"train.fsdp": False, "train.max_steps": 2, "modalities.text.encoder.options.dropout": dropout}
    _train([sys.executable], _recipe(tmp_path, "one", tiny_text_model, shapes_data, **settings))
    _train(TORCHRUN, _recipe(tmp_path, "two", tiny_text_model, shapes_data, **settings))
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    diff = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a if k.startswith("model.encoders.text.")])
    print(f"dropout {dropout}: max {diff.max():.2e}, share equal {(diff < 1e-6).float().mean():.4f}")
    if dropout == 0.0:
        assert (diff < 1e-6).float().mean() > 0.99 and diff.max() <= 2 * 2 * 3e-3
    else:
        assert (diff < 1e-6).float().mean() < 0.5


def test_fsdp_resume_continues_bit_identically(tmp_path, still_bert, shapes_data, fsdp_run):
    """Sharded AdamW moments are gathered whole into state.pt and re-sharded on resume."""
    half = _recipe(tmp_path, "resumed", still_bert, shapes_data, **{"train.max_steps": 2})
    _train(TORCHRUN, half)
    out = _train(TORCHRUN, half, "--resume", "train.max_steps=4")
    assert "resuming" in out
    a, b = _weights(fsdp_run[0]), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigterm_to_every_rank_checkpoints_and_resumes_bit_identically(tmp_path, still_bert, shapes_data, fsdp_run):
    """SLURM's preemption under torchrun: SIGTERM reaches torchrun and both ranks. The ranks agree on
    a step, gather the sharded state, rank 0 writes it, all exit 143; --resume ends where the
    uninterrupted run did, byte for byte."""
    import json
    import os
    import signal
    import time

    recipe = _recipe(tmp_path, "killed", still_bert, shapes_data, **{"train.checkpoint_every": 1,
                                                                     "train.log_every": 1})
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([*TORCHRUN, "-m", "fuse", "train", str(recipe)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        target = tmp_path / "killed" / "run" / "checkpoints" / "step-00000001.safetensors"
        deadline = time.monotonic() + 300
        while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert target.exists(), proc.communicate()[0] if proc.poll() is not None else "timed out"
        os.killpg(proc.pid, signal.SIGTERM)  # torchrun and both workers, as SLURM signals a job step
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "preempted: checkpointed step" in output, output[-3000:]
    assert not (tmp_path / "killed" / "run" / "eval.json").exists()
    out = _train(TORCHRUN, recipe, "--resume")
    assert "resuming" in out
    straight, killed = fsdp_run[0] / "run", tmp_path / "killed" / "run"
    for name in ("epoch-002.safetensors", "best.safetensors"):
        assert (killed / "checkpoints" / name).read_bytes() == (straight / "checkpoints" / name).read_bytes(), name
    numbers = lambda run: [{k: v for k, v in json.loads(line).items() if k != "samples_per_s"}  # noqa: E731
                           for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in numbers(killed) if r["kind"] == "val"] == [r for r in numbers(straight) if r["kind"] == "val"]
