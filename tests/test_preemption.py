"""Real kills: a run killed with kill -9 (or preempted with SIGTERM) at chosen points and resumed
with --resume ends with the same weights (bytes) and metrics.jsonl numbers as an uninterrupted run.

The killed run is a real `python -m fuse train` process. ``FUSE_TEST_PAUSE_BEFORE_STATE`` makes each
checkpoint pause after its weights file is written and before state.pt is, so a kill that waits for
a weights file to appear lands between the two writes of that checkpoint; state.pt then still names
the checkpoint before it. 24 pairs in batches of 8: 3 steps per epoch, 9 in all; checkpoints inside
epochs every 2 steps (at 2, 4, 8).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe

from fuse.cli import cli

ONLINE = {"modalities.text.encoder.frozen": False, "data.num_workers": 1}
FUSEMIX = {"objectives": [{"name": "fusemix", "options": {"pairing": "permutation"}}]}
DISTILL = {"objectives": [{"name": "infonce"}, {"name": "distillation", "weight": 0.5, "options": {"queue_size": 16}}],
           "teacher": {"modality": "image", "encoder": {"name": "timm", "options": {"model": "test_vit",
                                                                                    "pretrained": False}}}}

CASES = {  # name: (recipe changes, the file whose appearance triggers the signal, signal, resume line)
    # state.pt holds epoch 2's end (step 6); the step-8 weights are written but not yet named
    "cached-latents": ({}, "step-00000008.safetensors", signal.SIGKILL, "resuming after epoch 2 (step 6)"),
    # state.pt holds epoch 1's end; rows for step 4 were logged and must be dropped
    "online-encoder-workers": (ONLINE, "step-00000004.safetensors", signal.SIGKILL, "resuming after epoch 1 (step 3)"),
    # SIGTERM after the step-4 checkpoint: step 5 runs, checkpoints (not a multiple of 2) and stops
    "fusemix-sigterm": (FUSEMIX, "step-00000004.safetensors", signal.SIGTERM, "resuming at step 5 (2 of 3 steps"),
    # killed while epoch 2's end checkpoint is written (after its validation): resumes at step 4, mid-epoch
    "distillation-bank": (DISTILL, "epoch-002.safetensors", signal.SIGKILL, "resuming at step 4 (1 of 3 steps"),
}


def _recipe(tmp_path, tiny_text_model, shapes_data, out, changes):
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "output_dir": str(tmp_path / out), "train.epochs": 3, "train.checkpoint_every": 2, "train.log_every": 1,
        "train.keep_checkpoints": None, **changes})
    return write_recipe(tmp_path / f"{out}.yaml", r)


def _numbers(run) -> list[dict]:
    """metrics.jsonl without the one timing column."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "samples_per_s"} for r in rows]


@pytest.mark.parametrize("case", CASES)
def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, tiny_text_model, shapes_data, case):
    changes, trigger, sig, resume_line = CASES[case]
    straight = _recipe(tmp_path, tiny_text_model, shapes_data, "straight", changes)
    assert CliRunner().invoke(cli, ["train", str(straight)]).exit_code == 0

    killed = _recipe(tmp_path, tiny_text_model, shapes_data, "killed", changes)
    env = {**os.environ, "FUSE_TEST_PAUSE_BEFORE_STATE": "0.5", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fuse", "train", str(killed)], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        target = tmp_path / "killed" / "checkpoints" / trigger
        deadline = time.monotonic() + 120
        while not target.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert target.exists(), proc.communicate()[0] if proc.poll() is not None else "timed out"
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and its DataLoader worker
        else:
            proc.send_signal(sig)
        output = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, output
        assert "preempted: checkpointed step 5" in output and "--resume" in output
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "eval.json").exists()  # it really stopped before the end

    result = CliRunner().invoke(cli, ["train", str(killed), "--resume"])
    assert result.exit_code == 0, result.output
    assert resume_line in result.output
    ckpt = lambda run, name: (tmp_path / run / "checkpoints" / name).read_bytes()  # noqa: E731
    for name in ("epoch-003.safetensors", "best.safetensors"):
        assert ckpt("killed", name) == ckpt("straight", name)
    assert _numbers(tmp_path / "killed") == _numbers(tmp_path / "straight")
    assert not list((tmp_path / "killed" / "checkpoints").glob("step-*"))  # the last epoch's state names its file
