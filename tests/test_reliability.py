"""Never lose a run: safe export, atomic files, verified checkpoints, non-finite training, resume guards,
interrupts. Each test drives the CLI (CliRunner) or the public API; docs/reliability.md lists the faults."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe
from safetensors.torch import load_file

from fuse.cli import cli


def _train(tmp_path, tiny_text_model, shapes_data, *args, name="r", **over):
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{"train.epochs": 1, **over})
    result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / f"{name}.yaml", r)), *args])
    return r, result


def snapshot(root):
    """Every file under root with its bytes: what 'nothing lost, nothing written' compares."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_line(output: str) -> str:
    """The single `error:` line of a failed command (progress bars aside), with no traceback."""
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


def no_temp_files(root):
    return [str(p) for p in root.rglob(".*") if ".tmp" in p.name or ".old-" in p.name or "fuse-tmp-" in p.name]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_text_model, shapes_data):
    tmp = tmp_path_factory.mktemp("rel")
    r, result = _train(tmp, tiny_text_model, shapes_data)
    assert result.exit_code == 0, result.output
    return tmp / "run"


# ------------------------------------------------------------------ 1. export never destroys
def test_export_refuses_a_folder_that_is_not_an_export(run, tmp_path):
    mydir = tmp_path / "mydir"
    mydir.mkdir()
    (mydir / "notes.txt").write_text("keep")
    for force in ([], ["--force"]):
        result = CliRunner().invoke(cli, ["export", str(run), str(mydir), *force])
        assert result.exit_code == 2 and "is not a fuse export" in result.output
        one_line(result.output)
    assert (mydir / "notes.txt").read_text() == "keep" and sorted(os.listdir(mydir)) == ["notes.txt"]


@pytest.mark.parametrize("target", ["", "export", "checkpoints", "new/inside"])
def test_export_never_writes_into_the_run_dir(run, target):
    before = snapshot(run)
    result = CliRunner().invoke(cli, ["export", str(run), str(run / target), "--force"])
    assert result.exit_code == 2 and "run dir" in result.output, result.output
    assert snapshot(run) == before


def test_export_replaces_only_a_previous_export_with_force(run, tmp_path):
    out = tmp_path / "out"
    assert CliRunner().invoke(cli, ["export", str(run), str(out)]).exit_code == 0
    first = snapshot(out)
    again = CliRunner().invoke(cli, ["export", str(run), str(out)])
    assert again.exit_code == 2 and "pass --force" in again.output and snapshot(out) == first
    (out / "image" / "head.safetensors").write_bytes(b"old")  # to see that it was replaced
    assert CliRunner().invoke(cli, ["export", str(run), str(out), "--force"]).exit_code == 0
    second = snapshot(out)  # (the tiny random timm encoder is rebuilt on each export, so compare the heads)
    assert second.keys() == first.keys() and second["image/head.safetensors"] == first["image/head.safetensors"]
    assert not no_temp_files(tmp_path)
    (out / "notes.txt").write_text("mine")  # an export someone added to is no longer only an export
    result = CliRunner().invoke(cli, ["export", str(run), str(out), "--force"])
    assert result.exit_code == 2 and (out / "notes.txt").exists()


def test_export_files_have_normal_permissions(run, tmp_path):
    old = os.umask(0o022)
    try:
        assert CliRunner().invoke(cli, ["export", str(run), str(tmp_path / "out")]).exit_code == 0
    finally:
        os.umask(old)
    modes = {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert modes == {"0o644"}  # safetensors alone writes 0600
    assert oct((tmp_path / "out").stat().st_mode & 0o777) == "0o755"


def _enospc(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_during_export_leaves_nothing_and_keeps_the_old_export(run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert CliRunner().invoke(cli, ["export", str(run), str(out)]).exit_code == 0
    before = snapshot(out)
    monkeypatch.setattr("fuse.base.atomic._fsync", _enospc)
    for target, force in ((out, ["--force"]), (tmp_path / "new", [])):
        result = CliRunner().invoke(cli, ["export", str(run), str(target), *force])
        assert result.exit_code == 2 and "No space left on device" in result.output, result.output
        one_line(result.output)
    assert snapshot(out) == before and not (tmp_path / "new").exists() and not no_temp_files(tmp_path)


# ------------------------------------------------------------------ 2. atomic files, verified checkpoints
def test_disk_full_during_training_is_one_line_and_leaves_no_partial_file(tmp_path, tiny_text_model, shapes_data,
                                                                          monkeypatch):
    import fuse.base.atomic

    calls = {"n": 0}
    real = fuse.base.atomic._fsync

    def full_after_a_while(fd):
        calls["n"] += 1
        if calls["n"] > 6:  # the cache and the first files fit; a checkpoint does not
            _enospc(fd)
        real(fd)

    monkeypatch.setattr("fuse.base.atomic._fsync", full_after_a_while)
    _, result = _train(tmp_path, tiny_text_model, shapes_data)
    assert result.exit_code == 2 and "No space left on device" in result.output and "free some space" in result.output
    assert not no_temp_files(tmp_path)
    for f in (tmp_path / "run").rglob("*.safetensors"):
        load_file(str(f))  # whatever exists is whole


def test_checkpoints_record_a_hash_that_export_and_resume_verify(tmp_path, tiny_text_model, shapes_data):
    r, result = _train(tmp_path, tiny_text_model, shapes_data)
    assert result.exit_code == 0, result.output
    best = tmp_path / "run" / "checkpoints" / "best.safetensors"
    data = bytearray(best.read_bytes())
    data[-3] ^= 0xFF  # one flipped bit in the tensor data: safetensors still loads it
    best.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), str(tmp_path / "out")])
    assert result.exit_code == 2 and "does not match its recorded content hash" in result.output
    assert not (tmp_path / "out").exists()
    epoch = tmp_path / "run" / "checkpoints" / "epoch-001.safetensors"
    epoch.write_bytes(epoch.read_bytes()[:-8])
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "r.yaml"), "train.epochs=2", "--resume"])
    assert result.exit_code == 2 and "epoch-001.safetensors is unreadable" in result.output


def test_metrics_rewrite_on_resume_is_valid_json(run):
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON token {c}"))


# ------------------------------------------------------------------ 4. non-finite training
class _PoisonAt:
    """Turns the loss of chosen optimiser steps into NaN (a real forward, then poisoned)."""

    def __init__(self, steps):
        self.steps, self.calls = set(steps), 0

    def install(self, monkeypatch):
        from fuse.training.step import StepModule

        real = StepModule.forward

        def forward(module, batches):
            self.calls += 1
            loss, terms = real(module, batches)
            if self.calls in self.steps:
                terms = {k: v * float("nan") for k, v in terms.items()}
                loss = loss * float("nan")
            return loss, terms

        monkeypatch.setattr(StepModule, "forward", forward)


def _rows(run_dir):
    return [json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON token {c}"))
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_huge_learning_rate_stops_with_one_line_and_valid_metrics(tmp_path, tiny_text_model, shapes_data):
    _, result = _train(tmp_path, tiny_text_model, shapes_data, "optim.lr=1e30", "train.epochs=2")
    assert result.exit_code == 2, result.output
    line = one_line(result.output)
    assert "became NaN/Inf at step" in line and "optim.lr=1e+30 is far too high" in line
    assert [r for r in _rows(tmp_path / "run") if r["kind"] == "nonfinite"]
    assert "KeyError" not in result.output


def test_nonfinite_stop_rolls_back_to_the_last_good_checkpoint(tmp_path, tiny_text_model, shapes_data, monkeypatch):
    _PoisonAt({5}).install(monkeypatch)  # 3 steps per epoch: epoch 1 is good, step 5 is not
    _, result = _train(tmp_path, tiny_text_model, shapes_data, "train.epochs=3", "train.log_every=100")
    assert result.exit_code == 2 and "at step 5 (the first bad step)" in result.output, result.output
    assert "loss term 'infonce'" in result.output and "epoch-001.safetensors" in result.output
    ckpt = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.safetensors", "epoch-001.safetensors", "state.pt"]
    assert all(torch.isfinite(t).all() for t in load_file(str(ckpt / "best.safetensors")).values())
    assert (tmp_path / "run" / "export" / "fuse_model.json").exists()  # export_on_failure
    assert _rows(tmp_path / "run")[-1] == {"kind": "nonfinite", "step": 5, "parts": [
        "loss term 'infonce'", "the total loss", "the gradients"]}


def test_export_on_failure_false_exports_nothing(tmp_path, tiny_text_model, shapes_data, monkeypatch):
    _PoisonAt({5}).install(monkeypatch)
    _, result = _train(tmp_path, tiny_text_model, shapes_data, "train.epochs=3", "train.export_on_failure=false")
    assert result.exit_code == 2 and not (tmp_path / "run" / "export").exists()


def test_skip_step_drops_the_bad_update_and_counts_it(tmp_path, tiny_text_model, shapes_data, monkeypatch):
    _PoisonAt({2}).install(monkeypatch)
    _, result = _train(tmp_path, tiny_text_model, shapes_data, "train.epochs=2", "train.on_nonfinite=skip_step",
                       "train.log_every=1")
    assert result.exit_code == 0, result.output
    train_rows = [r for r in _rows(tmp_path / "run") if r["kind"] == "train"]
    assert [r["skipped_steps"] for r in train_rows] == [0, 1, 1, 1, 1, 1]
    assert train_rows[1]["loss"] is None  # NaN is written as null: the file stays JSON
    for f in (tmp_path / "run" / "checkpoints").glob("*.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(f)).values())
    # The count is part of the resumable state: a resumed run keeps counting from it.
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "r.yaml"), "train.epochs=3", "train.on_nonfinite=skip_step",
                                      "train.log_every=1", "--resume"])
    assert result.exit_code == 0, result.output
    train_rows = [r for r in _rows(tmp_path / "run") if r["kind"] == "train"]
    assert [r["skipped_steps"] for r in train_rows] == [0, 1, 1, 1, 1, 1, 1, 1, 1]


# ------------------------------------------------------------------ 5. resume guards
def test_resume_refuses_model_changes_and_writes_nothing(tmp_path, tiny_text_model, shapes_data):
    r, result = _train(tmp_path, tiny_text_model, shapes_data)
    assert result.exit_code == 0
    before = snapshot(tmp_path / "run")
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "r.yaml"), "embed_dim=32", "optim.lr=0.1", "--resume"])
    assert result.exit_code == 2 and "embed_dim: 16 -> 32" in result.output and "optim.lr: 0.003 -> 0.1" in result.output
    one_line(result.output)
    assert snapshot(tmp_path / "run") == before
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "r.yaml"), "train.epochs=2", "train.log_every=1",
                                      "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming with changed settings: train.epochs: 1 -> 2; train.log_every: 2 -> 1" in result.output
    assert CliRunner().invoke(cli, ["export", str(tmp_path / "run"), str(tmp_path / "out")]).exit_code == 0


# ------------------------------------------------------------------ 6. interrupts
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupt_says_how_to_resume(tmp_path, tiny_text_model, shapes_data, monkeypatch, how):
    from fuse.training.step import StepModule

    def interrupted(module, batches):
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt

    monkeypatch.setattr(StepModule, "forward", interrupted)
    _, result = _train(tmp_path, tiny_text_model, shapes_data, "train.epochs=2")
    assert result.exit_code == 130
    assert f"continue with fuse train {tmp_path / 'r.yaml'} train.epochs=2 --resume" in result.output


# ------------------------------------------------------------------ faults: kill -9
def _spawn(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "fuse", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _wait_for(cond, proc, timeout=300):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, "the process ended before the moment to kill it"
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def test_kill_9_during_training_and_export_loses_nothing(tmp_path, tiny_text_model, shapes_data):
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{"train.epochs": 200, "train.log_every": 1})
    recipe = write_recipe(tmp_path / "r.yaml", r)
    ckpt = tmp_path / "run" / "checkpoints"
    proc = _spawn("train", str(recipe))
    _wait_for(lambda: (ckpt / "state.pt").exists(), proc)
    time.sleep(0.7)  # somewhere in a later epoch: a step, an eval or a checkpoint write
    proc.kill()
    proc.wait()
    for f in ckpt.glob("*.safetensors"):
        load_file(str(f))  # every published file is whole
    _rows(tmp_path / "run")  # metrics.jsonl is still JSON line by line
    done = torch.load(ckpt / "state.pt", weights_only=True)["epoch"]  # state.pt is whole too
    result = CliRunner().invoke(cli, ["train", str(recipe), f"train.epochs={done + 1}", "--resume"])
    assert result.exit_code == 0 and f"resuming after epoch {done}" in result.output, result.output
    out = tmp_path / "out"
    proc = _spawn("export", str(tmp_path / "run"), str(out))
    _wait_for(lambda: list(tmp_path.glob(".out.fuse-tmp-*")), proc)
    proc.kill()
    proc.wait()
    assert not out.exists() or (out / "fuse_model.json").exists()  # absent, or complete
    assert CliRunner().invoke(cli, ["export", str(tmp_path / "run"), str(out), "--force"]).exit_code == 0
    assert not list(tmp_path.glob(".out.fuse-tmp-*"))  # the killed export's temp folder was swept


def test_kill_9_while_encoding_leaves_a_store_the_next_run_completes(tmp_path, tiny_text_model, shapes_data):
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{"train.epochs": 1, "data.encode_batch_size": 2,
                                                              "data.shard_rows": 4})
    recipe = write_recipe(tmp_path / "r.yaml", r)
    store = tmp_path / "cache" / "latent-store"
    proc = _spawn("train", str(recipe))
    # Killed after the first shard is published, while the image latents (36 rows, 9 shards) are encoded.
    _wait_for(lambda: list(store.glob("*/shard-*.json")), proc)
    proc.kill()
    proc.wait()
    rows = lambda: sum(len(json.loads(p.read_text())["keys"]) for p in store.glob("*/shard-*.json"))  # noqa: E731
    assert rows() < 36 + 12
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    assert rows() == 36 + 12                                           # every row once: nothing encoded twice
    assert not list(store.glob("*/.shard-*"))                          # what the killed run left is swept
    assert all(p.with_suffix(".json").exists() for p in store.glob("*/shard-*.safetensors"))
    again = CliRunner().invoke(cli, ["train", str(recipe), f"output_dir={tmp_path / 'run2'}"])
    assert again.exit_code == 0 and again.output.count("cached latents from") == 4   # all four read, none encoded


@pytest.fixture
def small_fs(tmp_path):
    """A real 256 KiB filesystem (tmpfs), where the machine lets us mount one."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root in a VM or container that allows it): "
                    f"{done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk_during_export_is_one_line_and_leaves_nothing(run, small_fs):
    out = small_fs / "export"
    result = CliRunner().invoke(cli, ["export", str(run), str(out)])
    assert result.exit_code == 2, result.output
    assert "No space left on device" in one_line(result.output)
    assert not out.exists() and not [p for p in small_fs.iterdir() if not p.name.endswith(".lock")]
