"""Trackers: one tiny run logs to jsonl, TensorBoard, offline W&B and an MLflow file store; each is read back
with that tool's own reader (TensorBoard's EventAccumulator, wandb.proto records, MlflowClient)."""

from __future__ import annotations

import json
import struct
import tempfile

import pytest
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe

from fuse.cli import cli
from fuse.eval.metrics_file import read_metrics


def _needs(module: str):
    return pytest.importorskip(module, reason=f"the {module} extra is not installed (pip install 'fuse-align[{module}]')")


@pytest.fixture(scope="module")
def logged(tmp_path_factory, tiny_text_model, shapes_data):
    for m in ("tensorboard", "wandb", "mlflow"):
        _needs(m)
    tmp = tmp_path_factory.mktemp("trackers")
    uri = (tmp / "run" / "mlstore").as_uri()  # a tracker's store stays inside its run: given relative to it
    recipe = write_recipe(tmp / "r.yaml", tiny_recipe(tmp, tiny_text_model, shapes_data, **{
        "train.epochs": 2, "train.log_every": 1,
        "logging": ["jsonl", {"name": "mlflow", "options": {"tracking_uri": "mlstore", "experiment": "tiny"}}]}))
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    scratch = tmp / "tmp"  # wandb stages media and artifacts in tempfile folders it removes only at exit
    scratch.mkdir()
    mp.setenv("TMPDIR", str(scratch))
    mp.setattr(tempfile, "tempdir", str(scratch))
    try:
        result = CliRunner().invoke(cli, ["train", str(recipe), "--log", "tensorboard", "--log", "wandb"])
    finally:
        mp.undo()
    assert result.exit_code == 0, result.output
    run = tmp / "run"
    return run, uri, read_metrics(run / "metrics.jsonl"), recipe


def test_jsonl_and_recipe_keep_the_trackers(logged):
    run, _, rows, _ = logged
    assert rows[0]["kind"] == "val" and rows[0]["step"] == 0 and [r["kind"] for r in rows].count("train") == 6
    import yaml

    saved = yaml.safe_load((run / "recipe.yaml").read_text())["trackers"]  # the fixture's recipe says `logging:`
    assert [e if isinstance(e, str) else e["name"] for e in saved] == ["jsonl", "mlflow", "tensorboard", "wandb"]


def test_tensorboard_event_files_hold_every_train_loss(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _, rows, _ = logged
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    losses = {e.step: e.value for e in acc.Scalars("train/loss")}
    want = {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}
    assert losses.keys() == want.keys() and all(abs(losses[s] - want[s]) < 1e-5 for s in want)
    assert [e.step for e in acc.Scalars("val/mean/R@1")] == [r["step"] for r in rows if r["kind"] == "val"]
    assert "metrics" in acc.Tags()["images"]


def _wandb_records(path):
    """Records of a .wandb file: W&B's LevelDB-style log (7-byte file header, 32 KiB blocks,
    7-byte chunk headers: crc32, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            yield rec


def test_offline_wandb_run_log_holds_history_and_config(logged):
    run, _, rows, _ = logged
    files = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    records = list(_wandb_records(files[0]))
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    logged_loss = [h["train/loss"] for h in history if "train/loss" in h]
    want = [r["loss"] for r in rows if r["kind"] == "train"]
    assert logged_loss == pytest.approx(want, abs=1e-5)
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    keys = {u.key for r in runs for u in r.config.update} | \
        {u.key for r in records if r.WhichOneof("record_type") == "config" for u in r.config.update}
    assert {"modalities", "train", "trackers"} <= keys


def test_mlflow_file_store_has_metrics_params_and_artifacts(logged):
    from mlflow.tracking import MlflowClient

    run, uri, rows, _ = logged
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("tiny")
    (mlrun,) = client.search_runs([exp.experiment_id])
    history = client.get_metric_history(mlrun.info.run_id, "train/loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == \
        pytest.approx([r["loss"] for r in rows if r["kind"] == "train"], abs=1e-6)
    assert "val/mean/R_at_1" in mlrun.data.metrics
    assert mlrun.data.params["train.epochs"] == "2"
    assert {a.path for a in client.list_artifacts(mlrun.info.run_id)} >= {"metrics.png", "eval.json"}
    assert mlrun.info.status == "FINISHED"


def test_unknown_or_missing_tracker_is_one_line_before_anything_runs(tmp_path, tiny_text_model, shapes_data,
                                                                     monkeypatch):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data))
    result = CliRunner().invoke(cli, ["train", str(recipe), "--tracker", "neptune"])
    assert result.exit_code == 2
    assert "Unknown tracker 'neptune' at trackers.0" in result.output and "tensorboard" in result.output
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    result = CliRunner().invoke(cli, ["train", str(recipe), "--log", "wandb"])
    assert result.exit_code == 2
    assert "tracker 'wandb' needs the 'wandb' package" in result.output and "fuse-align[wandb]" in result.output
    assert not (tmp_path / "run").exists()  # nothing was written


@pytest.mark.parametrize("kind", ["tracker", "logger"])  # logger: the kind's old name
def test_trackers_are_listed_by_fuse_plugins(kind):
    result = CliRunner().invoke(cli, ["plugins", "--kind", kind, "--json"])
    rows = json.loads(result.output)
    assert {r["name"] for r in rows} == {"tensorboard", "wandb", "mlflow"} and {r["kind"] for r in rows} == {"tracker"}


def test_a_plugin_on_the_old_hook_name_still_registers_a_tracker():
    """register_loggers is the hook's old name: a plugin written against it lands in the same registry."""
    import types

    import fuse
    from fuse.base.plugin_manager import register_plugin, registry, unregister_plugin

    class Quiet:
        class Options(fuse.Options):
            pass

    old = types.ModuleType("old_tracker_plugin")
    old.register_loggers = fuse.hookimpl(lambda register: register("quiet", Quiet))
    register_plugin(old)
    try:
        assert registry("tracker").get("quiet", "trackers.0").cls is Quiet
    finally:
        unregister_plugin(old)


def test_trackers_plus_equals_appends_once_and_logging_is_the_old_key(tmp_path):
    from fuse.base.errors import RecipeError
    from fuse.recipes.recipe import load_recipe

    (tmp_path / "r.yaml").write_text("modalities: {}\nobjectives: [{name: infonce}]\ndata: {train: t.jsonl}\n"
                                     "logging: [jsonl, {name: mlflow, options: {experiment: e}}]\n")
    recipe = load_recipe(tmp_path / "r.yaml", ['trackers+=["mlflow", "wandb", "wandb"]'])
    assert [e if isinstance(e, str) else e.name for e in recipe.trackers] == ["jsonl", "mlflow", "wandb"]
    (tmp_path / "both.yaml").write_text((tmp_path / "r.yaml").read_text() + "trackers: [wandb]\n")
    with pytest.raises(RecipeError, match="give `trackers` once"):
        load_recipe(tmp_path / "both.yaml")
    with pytest.raises(RecipeError, match="'\\+=' appends to a list"):
        load_recipe(tmp_path / "r.yaml", ["data.train+=more.jsonl"])


@pytest.mark.parametrize("target", ["../notes.txt", "ABSOLUTE"])
def test_metrics_jsonl_cannot_be_pointed_outside_the_run(tmp_path, tiny_text_model, shapes_data, target):
    """metrics.jsonl is core's file in the run folder: a recipe's jsonl `file:` is refused, and the user's file
    the option named is left as it was (it used to be replaced)."""
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    file = str(notes) if target == "ABSOLUTE" else "../notes.txt"
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "trackers": [{"name": "jsonl", "options": {"file": file}}]}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 2, result.output
    assert "trackers.0.options: metrics.jsonl is always written inside the run folder" in result.output
    assert notes.read_text() == "my notes\n"


def test_a_trackers_store_outside_its_run_is_refused_before_anything_runs(tmp_path, tiny_text_model, shapes_data):
    notes = tmp_path / "notes"
    notes.mkdir()
    for options in ({"name": "tensorboard", "options": {"log_dir": "../notes"}},
                    {"name": "mlflow", "options": {"tracking_uri": notes.as_uri()}}):
        recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data,
                                                               trackers=[options]))
        result = CliRunner().invoke(cli, ["train", str(recipe)])
        assert result.exit_code == 2 and "is outside the run folder" in result.output, result.output
    assert not (tmp_path / "run").exists() and list(notes.iterdir()) == []


def test_an_mlflow_server_that_does_not_answer_is_one_line_in_seconds(tmp_path, tiny_text_model, shapes_data):
    _needs("mlflow")
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, trackers=[
        {"name": "mlflow", "options": {"tracking_uri": f"http://127.0.0.1:{port}"}}]))
    t0 = time.monotonic()
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 2 and f"nothing answers at 127.0.0.1:{port}" in result.output, result.output
    assert time.monotonic() - t0 < 60  # MLflow's own retries took 259 s


def test_resume_continues_the_trackers_own_runs(logged):
    """Last in this file: it extends the shared run by an epoch."""
    from mlflow.tracking import MlflowClient

    run, uri, rows, recipe = logged
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    mp.setattr(tempfile, "tempdir", str(run.parent / "tmp"))
    mp.setenv("TMPDIR", str(run.parent / "tmp"))
    try:
        result = CliRunner().invoke(cli, ["train", str(recipe), "train.epochs=3", "--resume",
                                          "--log", "tensorboard", "--log", "wandb"])
    finally:
        mp.undo()
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=uri)
    (mlrun,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    steps = {m.step for m in client.get_metric_history(mlrun.info.run_id, "train/loss")}
    assert max(steps) > max(r["step"] for r in rows)  # the resumed epoch went to the same MLflow run
    ids = {p.name for p in (run / "wandb").glob("offline-run-*/run-*.wandb")}
    assert len(ids) == 1, ids  # one W&B run id across both offline folders
