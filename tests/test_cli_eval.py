"""`fuse eval` through the CLI on a trained tiny model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe

from fuse.cli import cli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_text_model, shapes_data):
    tmp = tmp_path_factory.mktemp("evalrun")
    recipe = write_recipe(tmp / "r.yaml", tiny_recipe(tmp, tiny_text_model, shapes_data, **{"train.epochs": 4}))
    assert CliRunner().invoke(cli, ["train", str(recipe)]).exit_code == 0
    return tmp / "run"


def test_retrieval_json_matches_training_eval_and_has_baselines(run_dir, shapes_data, tmp_path):
    result = CliRunner().invoke(cli, ["eval", str(run_dir), "--data", str(shapes_data["val"]), "--json",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    after = json.loads((run_dir / "eval.json").read_text())["after"]
    assert report["metrics"]["model"]["mean/R@1"] == pytest.approx(after["mean/R@1"])
    assert set(report["metrics"]) == {"model", "untrained heads"}  # latent sizes differ: no raw baseline
    assert (tmp_path / "retrieval.json").exists()
    assert (tmp_path / "recall_at_k.png").read_bytes()[:4] == b"\x89PNG"


def test_zeroshot_table_and_worst_classes_plot(run_dir, shapes_data, tmp_path):
    labels = tmp_path / "labels.jsonl"
    rows = [json.loads(l) for l in shapes_data["val"].read_text().splitlines()]
    labels.write_text("".join(json.dumps({"image": str(shapes_data["val"].parent / r["image"]),
                                          "label": r["text"].split()[1]}) + "\n" for r in rows))
    result = CliRunner().invoke(cli, ["eval", str(run_dir), "--task", "zeroshot", "--data", str(labels),
                                      "--templates", "short", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "top1" in result.output and "untrained heads" in result.output
    report = json.loads((tmp_path / "out" / "zeroshot.json").read_text())
    assert report["classes"] == 4 and report["templates"] == 5
    assert (tmp_path / "out" / "worst_classes.png").exists()


def test_classes_tsv_of_a_build_maps_labels_to_the_names_prompts_say(run_dir, shapes_data, tmp_path):
    """--classes reads the classes.tsv a dataset build writes (label<TAB>name): items labelled with opaque codes
    score exactly as the same items labelled by their names do."""
    rows = [json.loads(l) for l in shapes_data["val"].read_text().splitlines()]
    colours = sorted({r["text"].split()[1] for r in rows})
    code = {c: f"n{i:08d}" for i, c in enumerate(colours)}
    for name, label in (("names", lambda c: c), ("codes", lambda c: code[c])):
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"image": str(shapes_data["val"].parent / r["image"]), "label": label(r["text"].split()[1])})
            + "\n" for r in rows))
    (tmp_path / "names.txt").write_text("".join(c + "\n" for c in colours))
    (tmp_path / "classes.tsv").write_text("".join(f"{code[c]}\t{c}\n" for c in colours))
    reports = {}
    for name, classes in (("names", "names.txt"), ("codes", "classes.tsv")):
        result = CliRunner().invoke(cli, ["eval", str(run_dir), "--task", "zeroshot", "--data", str(tmp_path / f"{name}.jsonl"),
                                          "--classes", str(tmp_path / classes), "--templates", "short", "--json",
                                          "--no-baselines"])
        assert result.exit_code == 0, result.output
        reports[name] = json.loads(result.stdout)["metrics"]["model"]
    per_class = reports["codes"].pop("per_class_top1")  # keyed by the label records hold
    assert per_class == {code[c]: v for c, v in reports["names"].pop("per_class_top1").items()}
    assert reports["codes"] == reports["names"]


@pytest.mark.parametrize("args, message", [
    (["--task", "zeroshot", "--classes", "CLASSES"], "label(s) are not in the class list"),
    (["--task", "zeroshot", "--label-field", "nope"], "record has no 'nope' field"),
    (["--task", "zeroshot", "--modality", "text"], "--modality 'text' is not a non-text tower"),
    (["--task", "zeroshot", "--templates", "missing.txt"], "Templates 'missing.txt' not found"),
])
def test_bad_input_is_one_clear_line(run_dir, shapes_data, tmp_path, args, message):
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"image": str(next(shapes_data["val"].parent.glob("img/val-*.png"))),
                                  "label": "red"}) + "\n")
    classes = tmp_path / "classes.txt"
    classes.write_text("blue\ngreen\n")
    args = [str(classes) if a == "CLASSES" else a for a in args]
    result = CliRunner().invoke(cli, ["eval", str(run_dir), "--data", str(labels), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_retrieval_manifest_without_the_models_modalities(run_dir, tmp_path):
    bad = tmp_path / "audio.jsonl"
    bad.write_text(json.dumps({"audio": "x.wav", "text": "a dog"}) + "\n")
    result = CliRunner().invoke(cli, ["eval", str(run_dir), "--data", str(bad)])
    assert result.exit_code == 2 and "no record has both 'image' and 'text'" in result.output


def _colour_labels(shapes_data, split, path):
    rows = [json.loads(l) for l in shapes_data[split].read_text().splitlines()]
    path.write_text("".join(json.dumps({"image": str(shapes_data[split].parent / r["image"]),
                                        "label": r["text"].split()[1], "shape": r["text"].split()[2]}) + "\n"
                            for r in rows))
    return path


def test_probe_compares_three_feature_sets(run_dir, shapes_data, tmp_path):
    train = _colour_labels(shapes_data, "train", tmp_path / "train.jsonl")
    test = _colour_labels(shapes_data, "val", tmp_path / "test.jsonl")
    result = CliRunner().invoke(cli, ["eval", str(run_dir), "--task", "probe", "--train", str(train),
                                      "--modality", "image", "--test", str(test), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "raw latents" in result.output and "untrained heads" in result.output
    report = json.loads((tmp_path / "out" / "probe.json").read_text())
    assert set(report["metrics"]) == {"raw latents", "model", "untrained heads"}
    assert report["classes"] == 4 and report["test_items"] == len(test.read_text().splitlines())
    model = report["metrics"]["model"]
    assert model["top1"] == pytest.approx(sum(model["per_class_top1"].values()) / 4)  # balanced test set
    assert report["metrics"]["raw latents"]["dim"] != model["dim"]
    assert (tmp_path / "out" / "worst_classes.png").exists()
    # One file split by a key: a shape never appears on both sides.
    result = CliRunner().invoke(cli, ["eval", str(run_dir), "--task", "probe", "--train", str(train),
                                      "--modality", "image", "--test-fraction", "0.25", "--split-key", "shape", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["split_key"] == "shape" and report["test_items"] % 8 == 0 and report["test_items"] > 0


@pytest.mark.parametrize("args, message", [
    (["--test", "TRAIN", "--test-fraction", "0.2"], "either a test manifest"),
    (["--data", "TRAIN"], "--task probe takes --train"),
    (["--test", "ONECOLOUR"], "a probe needs 2+"),
    (["--test-fraction", "0.5", "--split-key", "label"], "never occur in the training part"),
    (["--test", "TRAIN", "--no-modality"], "say which one to probe, e.g. --modality image"),
])
def test_probe_bad_input_is_one_clear_line(run_dir, shapes_data, tmp_path, args, message):
    train = _colour_labels(shapes_data, "train", tmp_path / "train.jsonl")
    one = tmp_path / "one.jsonl"
    one.write_text("".join(l for l in train.read_text().splitlines(True) if '"red"' in l))
    if "ONECOLOUR" in args:
        train, args = one, [str(tmp_path / "train.jsonl") if a == "ONECOLOUR" else a for a in args]
    args = [str(train) if a == "TRAIN" else a for a in args]
    tower = [] if "--no-modality" in args else ["--modality", "image"]
    args = [a for a in args if a != "--no-modality"]
    result = CliRunner().invoke(cli, ["eval", str(run_dir), "--task", "probe", "--train", str(train), *tower, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_out_is_a_folder_fuse_eval_owns(run_dir, shapes_data, tmp_path):
    """--out writes into a new folder (marked as fuse eval's) and again into it; a user's folder is refused whole."""
    args = ["eval", str(run_dir), "--data", str(shapes_data["val"])]
    first = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "ours")])
    again = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "ours")])
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "retrieval.json").write_text("my own notes")
    (theirs / "thesis.docx").write_text("draft")
    result = CliRunner().invoke(cli, [*args, "--out", str(theirs)])
    assert result.exit_code == 2 and "is not a fuse eval folder" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert (theirs / "retrieval.json").read_text() == "my own notes" and sorted(p.name for p in theirs.iterdir()) == \
        ["retrieval.json", "thesis.docx"]
