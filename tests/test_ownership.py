"""Run folders fuse owns: a finished run, a user's folder and a busy run are refused before anything
is written; --overwrite moves a run aside (nothing deleted); one process per run (real processes);
a resume verifies every file first; a run sweeps only its own stale temporaries."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe

from fuse.base.owned import exclusive, owner
from fuse.cli import cli


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its content hash (what "nothing changed" compares)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def train(tmp_path, recipe: dict, *flags, name="r.yaml"):
    return CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / name, recipe)), *flags])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_text_model, shapes_data):
    """One finished one-epoch run, copied by each test that changes it."""
    tmp = tmp_path_factory.mktemp("finished")
    r = tiny_recipe(tmp, tiny_text_model, shapes_data, **{"train.epochs": 1})
    result = train(tmp, r)
    assert result.exit_code == 0, result.output
    return tmp, r


def copy_run(finished_run, tmp_path) -> tuple[Path, dict]:
    import shutil

    src, r = finished_run
    shutil.copytree(src / "run", tmp_path / "run", symlinks=True)
    return tmp_path / "run", {**r, "output_dir": str(tmp_path / "run")}


def one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    return lines[0]


def test_a_run_folder_is_marked_first(finished_run):
    tmp, r = finished_run
    assert owner(tmp / "run")["kind"] == "run" and owner(tmp / "run")["recipe"] == "tiny"


def test_train_into_a_finished_run_refuses_and_changes_nothing(finished_run, tmp_path):
    run, r = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    result = train(tmp_path, {**r, "optim": {"lr": 1e-2}})
    assert result.exit_code == 2
    line = one_line(result.output)
    assert "holds a finished fuse run" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(run) == before


def test_train_into_a_users_folder_with_run_like_names_refuses_before_writing(tmp_path, tiny_text_model, shapes_data):
    folder = tmp_path / "thesis"
    for name in ("checkpoints/best.safetensors", "eval.json", "metrics.jsonl", "recipe.yaml", "skipped_media.txt",
                 "export/thesis.docx"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"mine: {name}")
    before = snapshot(folder)
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, output_dir=str(folder))
    for flags in ([], ["--overwrite"], ["--resume"]):
        result = train(tmp_path, r, *flags)
        assert result.exit_code == 2, result.output
        assert "not a fuse run" in one_line(result.output)
    assert snapshot(folder) == before and sorted(p.name for p in folder.iterdir()) == sorted(
        ["checkpoints", "eval.json", "metrics.jsonl", "recipe.yaml", "skipped_media.txt", "export"])


def test_resume_and_overwrite_together_are_refused(finished_run, tmp_path):
    run, r = copy_run(finished_run, tmp_path)
    result = train(tmp_path, r, "--resume", "--overwrite")
    assert result.exit_code == 2 and "give one" in result.output


def test_a_run_that_stopped_before_its_first_step_is_started_again(tmp_path, tiny_text_model, shapes_data):
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{"data.train": str(tmp_path / "missing.jsonl")})
    first = train(tmp_path, r)
    assert first.exit_code == 2 and "missing.jsonl" in first.output  # fails on its data, after marking the folder
    assert owner(tmp_path / "run") is not None
    again = train(tmp_path, r)  # the folder holds nothing worth keeping: no refusal, the same data error
    assert again.exit_code == 2 and one_line(again.output) == one_line(first.output)


def test_resume_with_a_damaged_best_refuses_before_writing(finished_run, tmp_path):
    run, r = copy_run(finished_run, tmp_path)
    best = run / "checkpoints" / "best.safetensors"
    data = bytearray(best.read_bytes())
    data[-8:] = b"\x00" * 8
    best.write_bytes(bytes(data))
    before = snapshot(run)
    for _ in range(2):  # and every later resume says the same, with nothing changed
        result = train(tmp_path, {**r, "train": {**r["train"], "epochs": 2}}, "--resume")
        assert result.exit_code == 2
        line = one_line(result.output)
        assert "best.safetensors" in line and "Nothing was written" in line
        assert snapshot(run) == before


def test_a_run_sweeps_only_its_own_stale_temporaries(finished_run, tmp_path):
    run, r = copy_run(finished_run, tmp_path)
    stale = run / "checkpoints" / ".state.pt.fuse-tmp-k9x2.tmp"  # what a kill -9 during torch.save leaves
    stale.write_bytes(b"\x00" * 1000)
    stale_export = run / ".export.fuse-tmp-new-abc"
    stale_export.mkdir()
    users = [run / "checkpoints" / ".state.pt.tmp", run / ".notes.tmp"]
    for u in users:
        u.write_text("mine")
    result = train(tmp_path, {**r, "train": {**r["train"], "epochs": 2}}, "--resume")
    assert result.exit_code == 0, result.output
    assert "removed 2 temporary file(s)" in result.output
    assert not stale.exists() and not stale_export.exists() and all(u.read_text() == "mine" for u in users)


HOLD = """
import sys, time
from fuse.base.owned import exclusive
with exclusive(sys.argv[1], "output_dir"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_is_refused_naming_the_holder_then_a_dead_holders_lock_is_taken(
        finished_run, tmp_path):
    run, r = copy_run(finished_run, tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run)
        for flags in (["--resume"], ["--overwrite"], []):
            result = train(tmp_path, {**r, "train": {**r["train"], "epochs": 2}}, *flags)
            assert result.exit_code == 2
            line = one_line(result.output)
            assert f"in use by pid {holder.pid} on host {socket.gethostname()}" in line, line
        exported = CliRunner().invoke(cli, ["export", str(run), str(tmp_path / "out")])
        assert exported.exit_code == 2 and f"pid {holder.pid}" in exported.output
        assert snapshot(run) == before
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the kernel drops its lock, its pid stays in the file
        holder.wait()
    assert f"{holder.pid} " in (tmp_path / ".run.lock").read_text()
    exported = CliRunner().invoke(cli, ["export", str(run), str(tmp_path / "out")])  # takes the dead holder's lock
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / ".run.lock").read_text().startswith(f"{os.getpid()} ")


def test_two_real_training_processes_one_refused(tmp_path, tiny_text_model, shapes_data):
    """A real `fuse train` process holds output_dir; a second `fuse train` (this process) is refused at once."""
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{"train.epochs": 1})
    recipe = write_recipe(tmp_path / "r.yaml", r)
    env = {**os.environ, "FUSE_TEST_PAUSE_BEFORE_STATE": "60", "HF_HUB_OFFLINE": "1"}
    first = subprocess.Popen([sys.executable, "-m", "fuse", "train", str(recipe)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = tmp_path / ".run.lock"
    try:
        deadline = time.time() + 60
        while not (lock.exists() and lock.read_text().startswith(f"{first.pid} ")):
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.1)
        for flags in ([], ["--overwrite"]):
            second = CliRunner().invoke(cli, ["train", str(recipe), *flags])
            assert second.exit_code == 2
            assert f"in use by pid {first.pid} on host {socket.gethostname()}" in one_line(second.output)
        assert first.poll() is None  # the first one trains on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name]  # the refused one moved nothing aside


def test_lock_file_with_a_dead_pid_is_taken_over(tmp_path):
    (tmp_path / ".run.lock").write_text("999999999 elsewhere 2020-01-01T00:00:00\n")
    with exclusive(tmp_path / "run"):
        assert (tmp_path / ".run.lock").read_text().startswith(f"{os.getpid()} {socket.gethostname()} ")
    assert not (tmp_path / "run").exists()  # the lock is beside the folder, never in it



def test_make_demo_twice_moves_the_earlier_run_aside(finished_run, tmp_path):
    """The Makefile's demo command run again over a finished run (the tiny recipe standing in for the
    quickstart's): the earlier run is moved aside whole and the line says where; the new run trains."""
    import shlex

    makefile = (Path(__file__).parent.parent / "Makefile").read_text()
    line = next(ln for ln in makefile.splitlines() if "fuse train recipes/quickstart.yaml" in ln)
    run, r = copy_run(finished_run, tmp_path)
    before = snapshot(run)
    recipe = str(write_recipe(tmp_path / "quickstart.yaml", r))
    args = [recipe if a == "recipes/quickstart.yaml" else a for a in shlex.split(line.split("/fuse ", 1)[1])]
    second = CliRunner().invoke(cli, args)
    assert second.exit_code == 0, second.output
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and f"moved the earlier run {run} aside to {aside[0]}" in second.output
    assert snapshot(aside[0]) == before  # the earlier run, whole
    assert (run / "export" / "fuse_model.json").is_file() and owner(run)["id"] != owner(aside[0])["id"]


def test_under_torchrun_rank_0_holds_the_run_lock_for_every_rank(tmp_path, monkeypatch):
    from fuse.base.owned import Busy
    from fuse.training.rundir import owned_run

    run = tmp_path / "run"
    monkeypatch.setenv("RANK", "0")
    with owned_run(run, resume=False, overwrite=False, name="r"):
        monkeypatch.setenv("RANK", "1")  # another rank of the same run: no lock of its own, nothing written
        with owned_run(run, resume=False, overwrite=False, name="r"):
            pass
        monkeypatch.setenv("RANK", "0")  # rank 0 of a second torchrun job into the same folder: refused
        with pytest.raises(Busy, match=f"pid {os.getpid()}"):
            with owned_run(run, resume=False, overwrite=False, name="r"):
                pass
    assert sorted(p.name for p in run.iterdir()) == [".fuse-owned.json"]
