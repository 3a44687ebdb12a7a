"""`fuse train` end to end on tiny config-built encoders and real rendered shapes."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe
from safetensors.torch import load_file

from fuse.cli import cli
from fuse.eval.metrics_file import read_metrics


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_text_model, shapes_data):
    tmp = tmp_path_factory.mktemp("train")
    recipe = write_recipe(tmp / "r.yaml", tiny_recipe(tmp, tiny_text_model, shapes_data, **{
        "train.epochs": 20, "train.eval_every": 10, "optim.lr": 1e-2, "optim.weight_decay": 0.0,
        "modalities.image.head": {"name": "linear"}}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    return tmp, recipe, result.output


def test_run_dir_has_metrics_plot_checkpoints_and_export(trained):
    tmp, _, output = trained
    run = tmp / "run"
    rows = read_metrics(run / "metrics.jsonl")
    train_rows = [r for r in rows if r["kind"] == "train"]
    val_rows = [r for r in rows if r["kind"] == "val"]
    assert train_rows and all(r["loss"] == r["loss"] for r in train_rows)  # finite, not NaN
    assert {"step", "lr", "temperature", "grad_norm"} <= set(train_rows[-1])
    assert [r["epoch"] for r in val_rows] == [0, 10, 20]
    assert (run / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == \
        ["best.safetensors", "epoch-020.safetensors", "state.pt"]  # train.keep_checkpoints: 1
    assert (run / "export" / "fuse_model.json").exists()
    assert "R@1" in output and "before" in output and "after" in output


def test_training_improves_val_retrieval(trained):
    tmp, _, _ = trained
    results = json.loads((tmp / "run" / "eval.json").read_text())
    assert results["after"]["mean/R@1"] > results["before"]["mean/R@1"] + 10


def test_learning_rate_warms_up_and_decays(tmp_path, tiny_text_model, shapes_data):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "train.epochs": 4, "train.log_every": 1, "schedule.warmup_steps": 3, "data.val": None}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    lrs = [r["lr"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    peak = max(lrs)
    assert lrs.index(peak) == 2 and abs(peak - 3e-3) < 1e-9
    assert lrs[-1] < 0.1 * peak


def test_second_run_reads_the_latent_cache(trained):
    tmp, recipe, first = trained
    assert "image/train: cached 24 new latents" in first
    result = CliRunner().invoke(cli, ["train", str(recipe), "train.epochs=1", f"output_dir={tmp / 'again'}"])
    assert result.exit_code == 0, result.output
    assert "read 24 cached latents" in result.output and "encoding" not in result.output


def test_store_identity_changes_with_encoder_options(trained):
    tmp, recipe, _ = trained
    result = CliRunner().invoke(cli, ["train", str(recipe), "train.epochs=1", f"output_dir={tmp / 'cls'}",
                                      "modalities.text.encoder.options.pooling=cls"])
    assert result.exit_code == 0, result.output
    assert "text/train: cached 12 new latents" in result.output  # a new store for the text tower (12 captions)
    assert "image/train: read 24 cached latents" in result.output  # image tower unchanged


def test_unfrozen_encoder_trains_online(tmp_path, tiny_text_model, shapes_data):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "train.epochs": 2, "modalities.text.encoder.frozen": False, "optim.encoder_lr": 1e-2}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "text/train" not in result.output  # the text tower is not cached
    ckpt = load_file(str(tmp_path / "run" / "checkpoints" / "epoch-002.safetensors"))
    assert any(k.startswith("model.encoders.text.") for k in ckpt)      # fine-tuned weights are saved
    assert not any(k.startswith("model.encoders.image.") for k in ckpt)  # frozen ones are not
    before = load_file(str(tiny_text_model / "model.safetensors"))
    key = "embeddings.word_embeddings.weight"
    assert not ckpt[f"model.encoders.text.model.{key}"].allclose(before[key])


def test_empty_manifest_is_a_clear_error(tmp_path, tiny_text_model, shapes_data):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data))
    result = CliRunner().invoke(cli, ["train", str(recipe), f"data.train={empty}"])
    assert result.exit_code == 2
    assert f"Manifest is empty: {empty}" in result.output


def test_rank_best_metric_keeps_the_lowest_rank(tmp_path, tiny_text_model, shapes_data):
    """mean_rank is lower-is-better: the kept epoch is the one with the smallest val mean rank."""
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "train.epochs": 4, "train.eval_every": 1, "optim.lr": 1e-2,
        "train.best_metric": "image_to_text/mean_rank"}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    ranks = {r["epoch"]: r["image_to_text/mean_rank"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")
             if r["kind"] == "val"}
    best_epoch = json.loads((tmp_path / "run" / "eval.json").read_text())["best_epoch"]
    assert len(set(ranks.values())) > 1  # the rank moved, so the choice means something
    assert best_epoch == min(ranks, key=lambda e: (ranks[e], e))


def test_mapped_latents_train_exactly_like_resident_ones(tmp_path, tiny_text_model, shapes_data):
    """data.latents_on_device: false gathers each batch from the mapped store (prefetched): same weights."""
    from safetensors.torch import load_file

    runs = {}
    for on_device in ("true", "false"):
        r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{"train.max_steps": 4, "data.val": None,
                                                                  "output_dir": str(tmp_path / on_device)})
        recipe = write_recipe(tmp_path / f"{on_device}.yaml", r)
        result = CliRunner().invoke(cli, ["train", str(recipe), f"data.latents_on_device={on_device}"])
        assert result.exit_code == 0, result.output
        runs[on_device] = load_file(str(tmp_path / on_device / "checkpoints" / "epoch-002.safetensors"))
    assert "stay memory-mapped, gathered per step" in result.output
    assert all(torch.equal(runs["true"][k], runs["false"][k]) for k in runs["true"])


def test_bf16_autocast_trains_on_the_cpu(tmp_path, tiny_text_model, shapes_data):
    """train.precision: bf16 runs the heads under CPU autocast (the GPU default path, exercised here):
    weights stay fp32, the loss stays finite, and the numbers differ from the fp32 run's."""
    weights = {}
    for precision in ("fp32", "bf16"):
        recipe = write_recipe(tmp_path / f"{precision}.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
            "train.epochs": 2, "train.precision": precision, "data.val": None,
            "output_dir": str(tmp_path / precision)}))
        result = CliRunner().invoke(cli, ["train", str(recipe)])
        assert result.exit_code == 0, result.output
        rows = [r for r in read_metrics(tmp_path / precision / "metrics.jsonl") if r["kind"] == "train"]
        assert rows and all(r["loss"] == r["loss"] and r["loss"] < 10 for r in rows)  # finite
        weights[precision] = load_file(str(tmp_path / precision / "checkpoints" / "epoch-002.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights["bf16"].values())
    assert any(not torch.equal(weights["fp32"][k], weights["bf16"][k]) for k in weights["fp32"])
