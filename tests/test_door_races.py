"""The door under real processes: many starting one sweep at once all proceed; a checkpoint write killed
with SIGKILL leaves only fuse's own temporaries, which the next run (its --resume) sweeps; a copied marker
proves nothing; `output_dir=. --overwrite` from inside a run leaves the moved run as it was."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fuse.base.errors import StorageError
from fuse.base.owned import MARKER, claim, claim_file, mark, owner, seal, sign, sweep_temporaries


def _claim_at(root: str, start: float, queue) -> None:
    time.sleep(max(0.0, start - time.time()))
    try:
        queue.put(("new" if claim(root, "sweep", "sweep folder") else "ours"))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        queue.put(f"refused: {exc}")


def test_many_processes_claiming_one_sweep_at_once_all_proceed(tmp_path):
    """A SLURM array's tasks start together; before the claim lock 3 of 40 saw another's temporary marker."""
    ctx = multiprocessing.get_context("fork")
    queue, start = ctx.Queue(), time.time() + 1.0
    procs = [ctx.Process(target=_claim_at, args=(str(tmp_path / "sweep"), start, queue)) for _ in range(24)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    assert sorted(set(results)) == ["new", "ours"] and results.count("new") == 1, results
    assert owner(tmp_path / "sweep")["kind"] == "sweep"


KILLED_WRITE = """
import sys, torch
from fuse.base.atomic import save_tensors
save_tensors({"w": torch.ones(60_000_000)}, sys.argv[1])
"""


def test_a_checkpoint_write_killed_mid_way_leaves_only_what_the_run_sweeps(tmp_path):
    """safetensors stages its own .tmpXXXXXX beside the file it writes; a kill -9 there left 29 MB in
    checkpoints/ that --resume (which sweeps only fuse's names) never removed."""
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITE, str(ckpt / "epoch-001.safetensors")])
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.startswith(".tmp") for p in ckpt.rglob("*")):  # safetensors is writing
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.001)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the write finished before it could be killed"
    assert any(ckpt.iterdir())  # the kill left something
    sweep_temporaries(ckpt)  # what owned_run does under the run's lock on --resume
    assert list(ckpt.iterdir()) == []


def test_a_copied_marker_proves_nothing(tmp_path):
    run = tmp_path / "run"
    mark(run, "run", recipe="tiny")
    (run / "metrics.jsonl").write_text("{}\n")
    seal(run)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "recipe.yaml").write_text("my own notes\n")
    (mine / "notes.txt").write_text("thesis\n")
    (mine / MARKER).write_bytes((run / MARKER).read_bytes())
    assert owner(run)["kind"] == "run" and owner(mine) is None
    with pytest.raises(StorageError, match="written for another folder"):
        claim(mine, "run", "output_dir")
    assert sorted(p.name for p in mine.iterdir()) == [MARKER, "notes.txt", "recipe.yaml"]
    # a whole copy of a sealed fuse folder is still fuse's: its files are exactly the ones listed
    import shutil

    shutil.copytree(run, tmp_path / "copy")
    assert owner(tmp_path / "copy")["kind"] == "run"


def test_an_input_or_a_users_file_is_never_an_output(tmp_path):
    manifest, thesis = tmp_path / "train.jsonl", tmp_path / "thesis.txt"
    manifest.write_text("{}\n")
    thesis.write_text("mine\n")
    with pytest.raises(StorageError, match="is also an input"):
        claim_file(tmp_path / "." / "train.jsonl", "curate", "--out", inputs=(manifest,))
    with pytest.raises(StorageError, match="cannot prove it wrote it"):
        claim_file(thesis, "curate", "--out")
    out = tmp_path / "curated.jsonl"
    claim_file(out, "curate", "--out")
    out.write_text("{}\n")
    sign(out, "curate")
    claim_file(out, "curate", "--out")  # fuse's own file may be replaced
    out.write_text("{} edited by the user\n")
    with pytest.raises(StorageError, match="cannot prove it wrote it"):
        claim_file(out, "curate", "--out")


def test_curate_refuses_to_write_over_its_manifest_or_a_users_file(tmp_path, shapes_data):
    from click.testing import CliRunner

    from fuse.cli import cli

    manifest = tmp_path / "train.jsonl"
    manifest.write_bytes(Path(shapes_data["train"]).read_bytes())
    (tmp_path / "concepts.txt").write_text("red\n")
    (tmp_path / "thesis.txt").write_text("mine\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for out in (manifest, tmp_path / "thesis.txt"):
        result = CliRunner().invoke(cli, ["curate", str(manifest), "--concepts", str(tmp_path / "concepts.txt"),
                                          "--out", str(out)])
        assert result.exit_code == 2 and result.output.startswith("error: --out"), result.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_plot_of_a_folder_that_is_not_a_run_keeps_the_users_picture(tmp_path):
    from click.testing import CliRunner

    from fuse.cli import cli

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"kind": "train", "step": 1, "loss": 1.0}) + "\n")
    (tmp_path / "metrics.png").write_bytes(b"my figure")
    result = CliRunner().invoke(cli, ["plot", str(tmp_path)])
    assert result.exit_code == 2 and "is not a fuse run folder" in result.output
    assert (tmp_path / "metrics.png").read_bytes() == b"my figure"


def test_overwrite_of_dot_from_inside_a_run_leaves_the_moved_run_as_it_was(tmp_path, tiny_text_model, shapes_data,
                                                                          monkeypatch):
    from click.testing import CliRunner
    from conftest import tiny_recipe, write_recipe

    from fuse.cli import cli

    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{"train.epochs": 1, "train.eval_every": 5})
    recipe = write_recipe(tmp_path / "r.yaml", r)
    assert CliRunner().invoke(cli, ["train", str(recipe)]).exit_code == 0
    run = tmp_path / "run"
    before = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    monkeypatch.chdir(run)
    result = CliRunner().invoke(cli, ["train", str(recipe), "output_dir=.", "--overwrite"])
    assert result.exit_code == 0, result.output
    (aside,) = tmp_path.glob("run.old-*")
    assert {str(p.relative_to(aside)): p.read_bytes() for p in aside.rglob("*") if p.is_file()} == before
    assert owner(run)["id"] != json.loads(before[MARKER])["id"] and (run / "eval.json").is_file()
    os.chdir(tmp_path)


def test_export_force_refuses_a_folder_with_a_copied_fuse_model_json(trained_shapes_export, tmp_path):
    """--force replaces a previous export, proven by the files its fuse_model.json records, not by the file alone."""
    import shutil

    from click.testing import CliRunner

    from fuse.cli import cli

    mine = tmp_path / "mine"
    (mine / "text").mkdir(parents=True)
    (mine / "text" / "thesis.tex").write_text("my chapter\n")
    shutil.copyfile(trained_shapes_export / "fuse_model.json", mine / "fuse_model.json")
    result = CliRunner().invoke(cli, ["export", str(trained_shapes_export.parent), str(mine), "--force"])
    assert result.exit_code == 2 and "is not a fuse export" in result.output, result.output
    assert (mine / "text" / "thesis.tex").read_text() == "my chapter\n"
    copy = tmp_path / "copy"
    shutil.copytree(trained_shapes_export, copy)  # a whole previous export is replaced with --force
    result = CliRunner().invoke(cli, ["export", str(trained_shapes_export.parent), str(copy), "--force"])
    assert result.exit_code == 0, result.output
