"""Any number of towers: three modalities in one model, pairs from their own manifests, binding a
tower onto an existing export, evaluating two towers never trained together, and the errors a
user gets for recipes that cannot work. Tiny config-built encoders on the real shapes data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import COLORS, _draw, tiny_recipe, write_recipe
from safetensors.torch import load_file

import fuse
from fuse.cli import cli
from fuse.recipes.plan import load_plan

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def three(tmp_path_factory, shapes_data):
    """The shapes data with a third modality, `grey` (the same shape in greyscale), as manifests:
    all three fields per record; image-text only; grey-text only (records lacking the others)."""
    root = tmp_path_factory.mktemp("three")
    out = {}
    for split in ("train", "val"):
        src = Path(shapes_data[split])
        records = [json.loads(line) for line in src.read_text().splitlines()]
        full, it, gt = [], [], []
        for r in records:
            image = src.parent / r["image"]
            grey = root / f"grey-{split}-{Path(r['image']).name}"
            from PIL import Image

            Image.open(image).convert("L").convert("RGB").save(grey)
            rec = {"id": r["id"], "image": str(image), "grey": str(grey), "text": r["text"]}
            full.append(rec)
            it.append({k: rec[k] for k in ("id", "image", "text")})
            gt.append({k: rec[k] for k in ("id", "grey", "text")})
        for name, rows in (("all", full), ("it", it), ("gt", gt)):
            path = root / f"{name}-{split}.jsonl"
            path.write_text("".join(json.dumps(x) + "\n" for x in rows))
            out[f"{name}-{split}"] = path
    return out


def _three_recipe(tmp_path, tiny_text_model, three, **overrides):
    recipe = tiny_recipe(tmp_path, tiny_text_model, {"train": three["all-train"], "val": three["all-val"]}, **overrides)
    recipe["modalities"]["grey"] = {"encoder": {"name": "timm", "options": {"model": "test_efficientnet",
                                                                            "pretrained": False}},
                                    "head": {"name": "linear"}}
    recipe["objectives"] = [{"name": "infonce", "pair": ["image", "text"]}, {"name": "infonce", "pair": ["grey", "text"]}]
    recipe["eval"] = {"pairs": [["image", "grey"]]}
    recipe["train"].update({"epochs": 6, "eval_every": 3})
    return recipe


def _train(tmp_path, recipe) -> Path:
    result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / "r.yaml", recipe))])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return Path(recipe["output_dir"])


def test_three_towers_train_export_load_and_evaluate_any_two(tmp_path, tiny_text_model, three):
    run = _train(tmp_path, _three_recipe(tmp_path, tiny_text_model, three))
    results = json.loads((run / "eval.json").read_text())
    after = results["after"]
    # Both trained pairs and the never-trained image-grey pair are evaluated every time.
    for key in ("image_to_text/R@1", "grey_to_text/R@1", "image_to_grey/R@1", "image-text/mean/R@1", "mean/R@1"):
        assert key in after
    assert after["mean/R@1"] == pytest.approx(sum(after[f"{d}/R@1"] for d in (
        "image_to_text", "text_to_image", "grey_to_text", "text_to_grey")) / 4)
    assert after["mean/R@5"] > results["before"]["mean/R@5"]
    config = json.loads((run / "export" / "fuse_model.json").read_text())
    assert set(config["modalities"]) == {"image", "grey", "text"} and config["format_version"] == 2
    assert config["pairs"] == [["image", "text"], ["grey", "text"]]
    model = fuse.load(run / "export")
    for m, inputs in (("image", [_draw("circle", COLORS["red"])]), ("grey", [_draw("circle", COLORS["red"])]),
                      ("text", ["a red circle"])):
        z = model.embed(m, inputs)
        assert z.shape == (1, 16) and torch.allclose(z.norm(dim=-1), torch.ones(1), atol=1e-5)
    # Any two towers from the CLI, including two never paired in training.
    out = CliRunner().invoke(cli, ["eval", str(run), "--data", str(three["all-val"]), "--modalities", "image,grey",
                                   "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output[out.output.index("{"):])
    assert report["modalities"] == ["image", "grey"] and "image_to_grey/R@1" in report["metrics"]["model"]
    missing = CliRunner().invoke(cli, ["eval", str(run), "--data", str(three["all-val"])])
    assert missing.exit_code == 2 and "--modalities" in missing.output


def test_each_pair_from_its_own_manifest_records_lacking_modalities(tmp_path, tiny_text_model, three):
    recipe = _three_recipe(tmp_path, tiny_text_model, three)
    recipe["data"] = {"cache_dir": str(tmp_path / "cache"), "encode_batch_size": 16,
                      "pairs": [{"modalities": ["image", "text"], "train": str(three["it-train"]),
                                 "val": str(three["it-val"]), "batch_size": 6},
                                {"modalities": ["grey", "text"], "train": str(three["gt-train"]),
                                 "val": str(three["gt-val"]), "batch_size": 4, "weight": 0.5}]}
    recipe["eval"] = {}
    recipe["train"].update({"epoch": ["grey", "text"], "epochs": 2})
    run = _train(tmp_path, recipe)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = max(r["step"] for r in rows)
    assert steps == 2 * (24 // 4)  # an epoch is one pass over grey-text (24 pairs, batch 4)
    assert {"loss/image-text:infonce", "loss/grey-text:infonce"} <= set(rows[1])


def test_bind_a_new_tower_onto_an_export_keeps_the_others_frozen(tmp_path, tiny_text_model, three):
    (tmp_path / "a").mkdir()
    first = tiny_recipe(tmp_path / "a", tiny_text_model, {"train": three["it-train"], "val": three["it-val"]})
    base = _train(tmp_path / "a", first) / "export"
    second = {
        "name": "bind", "seed": 0, "device": "cpu", "output_dir": str(tmp_path / "b" / "run"), "embed_dim": 16,
        "base_model": str(base),
        "modalities": {"grey": {"encoder": {"name": "timm", "options": {"model": "test_efficientnet",
                                                                        "pretrained": False}},
                                "head": {"name": "linear"}}},
        "objectives": [{"name": "infonce", "pair": ["grey", "text"]}],
        "data": {"train": str(three["gt-train"]), "val": str(three["gt-val"]), "cache_dir": str(tmp_path / "cache")},
        "train": {"batch_size": 8, "epochs": 3},
    }
    (tmp_path / "b").mkdir()
    run = _train(tmp_path / "b", second)
    old, new = fuse.load(base), fuse.load(run / "export")
    assert set(new.modalities) == {"image", "text", "grey"}
    for m in ("image", "text"):  # the base towers' heads did not move
        for (k, v), (k2, v2) in zip(old.heads[m].state_dict().items(), new.heads[m].state_dict().items()):
            assert k == k2 and torch.equal(v, v2)
    assert "grey_to_text/R@1" in json.loads((run / "eval.json").read_text())["after"]


def test_exports_written_before_n_modalities_still_load():
    model = fuse.load(DATA / "export_v1")
    expected = load_file(str(DATA / "export_v1_expected.safetensors"))
    assert model.modalities == ("image", "text")
    assert torch.allclose(model.embed("text", ["a red circle", "a blue square"]), expected["text"], atol=1e-6)
    shapes = [_draw("circle", COLORS["red"]), _draw("square", COLORS["blue"])]
    assert torch.allclose(model.embed("image", shapes), expected["image"], atol=1e-6)


@pytest.mark.parametrize("change, message", [
    ({"objectives": [{"name": "infonce", "pair": ["image", "audio"]}]},
     "objectives.0.pair: 'audio' is not a modality of the recipe"),
    ({"objectives": [{"name": "infonce"}]}, "objectives.0.pair: name the two modalities it aligns"),
    ({"objectives": [{"name": "infonce", "pair": ["image", "text"]}]},
     "objectives: the trained pairs leave the modalities unconnected (image, text | grey)"),
    ({"modalities.grey": {"head": {"name": "linear"}}}, "modalities.grey.encoder: required field is missing"),
    ({"data.pairs": [{"modalities": ["image", "grey"]}]}, "data.pairs.0: no objective acts on ['image', 'grey']"),
    ({"train.epoch": ["image", "grey"]}, "train.epoch: ['image', 'grey'] is not a pair any objective trains"),
    ({"teacher": {"modality": "image", "encoder": {"name": "hf-text", "options": {"model": "x"}}}},
     "teacher.encoder: 'hf-text' consumes text but the image tower's encoder 'timm' consumes image"),
    ({"objectives": [{"name": "infonce", "pair": ["image", "text"]}, {"name": "distillation", "pair": ["grey", "text"]}],
      "teacher": {"modality": "image", "encoder": {"name": "timm", "options": {"model": "test_efficientnet"}}}},
     "objectives.1 (distillation) acts on ['grey', 'text'] but its 'teacher' encodes image"),
])
def test_recipes_that_cannot_work_are_one_line_naming_the_field(tmp_path, tiny_text_model, three, change, message):
    recipe = _three_recipe(tmp_path, tiny_text_model, three)
    for key, value in change.items():
        node = recipe
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / "bad.yaml", recipe)), "--dry-run"])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and message in line, line


def test_dry_run_lists_pairs_input_kinds_and_objective_pairs(tmp_path, tiny_text_model, three):
    plan = load_plan(write_recipe(tmp_path / "r.yaml", _three_recipe(tmp_path, tiny_text_model, three)))
    from fuse.training.dryrun import dry_run_report

    report = dry_run_report(plan)
    assert [p["modalities"] for p in report["pairs"]] == [["image", "text"], ["grey", "text"]]
    assert report["modalities"]["grey"]["input_kinds"] == ["image"]
    assert report["eval_pairs"] == [["image", "grey"]]


def test_fuse_plugins_lists_input_kinds():
    rows = json.loads(CliRunner().invoke(cli, ["plugins", "--json", "--kind", "input"]).output)
    kinds = {r["name"]: r for r in rows}
    assert {"image", "text", "audio"} <= set(kinds)
    assert kinds["image"]["files"] is True and kinds["text"]["files"] is False
