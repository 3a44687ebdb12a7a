"""Seeds and sweeps through the CLI on tiny config-built encoders: tables, latent-store reuse, resume, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe

from fuse.cli import cli


@pytest.fixture()
def recipe(tmp_path, tiny_text_model, shapes_data):
    return write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "train.epochs": 1, "output_dir": str(tmp_path / "sweep")}))


def test_sweep_ranks_points_encodes_frozen_towers_once_and_resumes(recipe, tmp_path):
    grid = ["--grid", "objectives.0.options.init_temperature=0.05,0.1", "--grid", "train.batch_size=8"]
    first = CliRunner().invoke(cli, ["sweep", str(recipe), *grid, "--index", "1"])  # as one SLURM array task
    assert first.exit_code == 0, first.output
    assert first.output.count("cached") >= 4 and "new latents" in first.output  # the first run fills the store
    root = tmp_path / "sweep"
    done_before = (root / "001-init_temperature=0.1-batch_size=8" / "eval.json").stat().st_mtime_ns
    rest = CliRunner().invoke(cli, ["sweep", str(recipe), *grid])
    assert rest.exit_code == 0, rest.output
    assert "[1/2] 000-init_temperature=0.05-batch_size=8: training" in rest.output
    assert "[2/2]" not in rest.output  # the finished point is not trained again
    assert "new latents" not in rest.output and "read 24 cached latents" in rest.output  # encoded once
    assert (root / "001-init_temperature=0.1-batch_size=8" / "eval.json").stat().st_mtime_ns == done_before
    table = json.loads((root / "sweep.json").read_text())
    scores = [r["metrics"]["mean/R@1"] for r in table["runs"]]
    assert table["metric"] == "mean/R@1" and len(scores) == 2 and scores == sorted(scores, reverse=True)
    for r in table["runs"]:  # each row is its own run's: trained with its values, scored by its own last val row
        import yaml

        trained = yaml.safe_load((root / r["name"] / "recipe.yaml").read_text())
        assert trained["objectives"][0]["options"]["init_temperature"] == r["values"]["objectives.0.options.init_temperature"]
        val = [json.loads(line) for line in (root / r["name"] / "metrics.jsonl").read_text().splitlines()]
        assert r["metrics"]["mean/R@1"] == pytest.approx([v for v in val if v["kind"] == "val"][-1]["mean/R@1"])
        assert f"| {r['name']} |" in (root / "sweep.md").read_text()
    assert (root / "sweep.md").read_text().count("\n") == 4
    assert (root / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    listed = CliRunner().invoke(cli, ["sweep", str(recipe), *grid, "--list"])
    assert listed.output.splitlines()[0].startswith("0\t")


def test_seeds_table_is_mean_and_std_of_each_seed(recipe, tmp_path):
    result = CliRunner().invoke(cli, ["train", str(recipe), "--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "sweep"
    stats = json.loads((root / "seeds.json").read_text())
    per_seed = [json.loads((root / f"seed-{s}" / "eval.json").read_text())["after"] for s in (0, 1)]
    assert json.loads((root / "seed-1.point.json").read_text()) == {"values": {"seed": 1}, "done": True}
    for key in ("mean/R@1", "image_to_text/R@5"):
        vals = np.array([m[key] for m in per_seed])
        assert stats[key]["mean"] == pytest.approx(vals.mean())
        assert stats[key]["std"] == pytest.approx(vals.std(ddof=1))
    assert "| mean/R@1 |" in (root / "seeds.md").read_text() and "±" in result.output


@pytest.mark.parametrize("args, message", [
    (["--grid", "train.batch_sise=8,16"], "sweep point 000-batch_sise=8 (train.batch_sise=8)"),
    (["--grid", "train.batch_size=8,1"], "sweep point 001-batch_size=1 (train.batch_size=1)"),
    (["--grid", "train.batch_size="], "--grid 'train.batch_size=': no values"),
    (["--grid", "train.batch_size"], "must look like key.sub=v1,v2"),
    ([], "give --grid key=v1,v2"),
    (["--grid", "train.batch_size=8", "--index", "3"], "--index 3: this sweep has 1 points"),
])
def test_bad_sweeps_are_one_line_before_anything_trains(recipe, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["sweep", str(recipe), *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 or "error:" in result.output.splitlines()[0]
    assert not (tmp_path / "sweep").exists()


def test_bad_seeds_are_one_line(recipe, tmp_path):
    result = CliRunner().invoke(cli, ["train", str(recipe), "--seeds", "0,x"])
    assert result.exit_code == 2 and "--seeds '0,x': give comma-separated integers" in result.output


def test_samples_and_a_sweep_file_draw_the_same_points_an_independent_draw_gives(recipe, tmp_path):
    """--samples N of the product, from --grid or a --config file: the points random.Random(seed).sample picks."""
    import itertools
    import random

    lrs, sizes = [0.001, 0.002, 0.003], [8, 16]
    product = list(itertools.product(lrs, sizes))
    want = [product[i] for i in sorted(random.Random(5).sample(range(len(product)), 3))]
    config = tmp_path / "sweep.yaml"
    config.write_text(json.dumps({"grid": {"optim.lr": lrs, "train.batch_size": sizes}, "samples": 3, "seed": 5}))
    by_file = CliRunner().invoke(cli, ["sweep", str(recipe), "--config", str(config), "--list"])
    by_flags = CliRunner().invoke(cli, ["sweep", str(recipe), "--grid", "optim.lr=0.001,0.002,0.003",
                                        "--grid", "train.batch_size=8,16", "--samples", "3", "--seed", "5", "--list"])
    for result in (by_file, by_flags):
        assert result.exit_code == 0, result.output
        rows = [line.split("\t") for line in result.output.splitlines()]
        assert [r[2] for r in rows] == [f"optim.lr={lr} train.batch_size={b}" for lr, b in want]
    assert not (tmp_path / "sweep").exists()  # --list trains nothing
