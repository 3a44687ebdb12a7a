"""`fuse eval EXPORT --benchmark zeroshot --root FIXTURES` over a tiny trained export: one row per set present,
the paper's metric marked, the average row, protocol notes for partial sets, numbers equal to brute force with
CLIP's prompt ensembling; --on-missing; multi-label manifests scored with mAP (checked against scikit-learn);
the layouts found refused or misread before (Kaggle's ImageNet, COCO val2017 alone, MSR-VTT's split files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import dataset_fixtures as fx
import fuse
import suite_fixtures as sf
from fuse.cli import cli
from fuse.plugins.datasets.layout import class_names


@pytest.fixture(scope="module")
def suite_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    sf.eurosat(root / "eurosat")                                                   # torchvision's, under the set
    sf.coop(root, "oxford_pets", "split_zhou_OxfordPets.json", "images", "oxford_pets")   # CoOp's
    images, labels = sf.cifar_arrays(20, 10)
    sf.cifar10_binary(root / "cifar10", images, labels)                             # binary
    return root


def test_zeroshot_suite_table_with_average(tmp_path, suite_root, trained_shapes_export):
    out = tmp_path / "out"
    args = ["eval", str(trained_shapes_export), "--benchmark", "zeroshot", "--root", str(suite_root), "--out", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "benchmarks.json").read_text())
    ran = report["benchmarks"]
    assert list(ran) == ["cifar10", "oxford_pets", "eurosat"]   # the suite's order
    assert report["skipped"]["food101"].startswith("no food101/ under")
    assert ran["oxford_pets"]["metric"] == "mean_per_class_top1" and ran["eurosat"]["metric"] == "top1"
    for variant in ("model", "untrained heads"):
        want = sum(r["metrics"][variant][r["metric"]] for r in ran.values()) / 3
        assert report["average"]["metrics"][variant] == pytest.approx(want)
    table = (out / "benchmarks.md").read_text()
    assert "| oxford_pets | test (37 queries, 37 classes; 37 of 3,669 images: not the published protocol) | " \
           "mean per-class (paper) |" in table
    assert "| eurosat | all (20 queries, 10 classes; no test split in this layout: all 20 images, not the published " \
           "protocol) | top-1 (paper) |" in table
    assert "| zero-shot average | 3 sets | paper metric |" in table

    # eurosat by hand: each of CLIP's 3 templates embedded and normalised, averaged per class, normalised
    model = fuse.load(trained_shapes_export)
    names, templates = class_names("eurosat"), (Path(sf.__file__).parents[1] / "plugins" / "datasets" / "templates"
                                                / "eurosat.txt").read_text().splitlines()
    prompts = F.normalize(model.embed("text", [t.replace("{}", n) for n in names for t in templates]), dim=-1)
    cls = F.normalize(prompts.view(len(names), len(templates), -1).mean(1), dim=-1)
    files = sorted((suite_root / "eurosat" / "eurosat" / "2750").rglob("*.jpg"))
    pred = (model.embed("image", [str(p) for p in files]) @ cls.T).argmax(1).tolist()
    truth = [sf.EUROSAT.index(p.parent.name) for p in files]
    assert ran["eurosat"]["metrics"]["model"]["top1"] == pytest.approx(
        100 * sum(p == t for p, t in zip(pred, truth)) / len(files), abs=1e-4)


def test_a_suite_folder_in_neither_layout_is_one_line(tmp_path, suite_root, trained_shapes_export):
    (tmp_path / "root" / "dtd" / "stray").mkdir(parents=True)
    result = CliRunner().invoke(cli, ["eval", str(trained_shapes_export), "--benchmark", "zeroshot", "--root",
                                      str(tmp_path / "root"), "--cache-dir", str(tmp_path / "c"), "--out",
                                      str(tmp_path / "out")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "dtd: " in errors[0] and "is in neither known layout; it needs CoOp's split_zhou_DescribableTextures.json "         "beside images/ or torchvision's layout (labels/test1.txt)" in errors[0]
    assert not (tmp_path / "out").exists()


def test_on_missing_is_offered_and_reuses_the_data_build(tmp_path, trained_shapes_export):
    root = sf.coop(tmp_path, "oxford_pets", "split_zhou_OxfordPets.json", "images", "oxford_pets")
    gone = next((root / "oxford_pets" / "images").rglob("*.jpg"))
    gone.unlink()
    cache = tmp_path / "cache"
    base = ["eval", str(trained_shapes_export), "--benchmark", "oxford_pets", "--root", str(root / "oxford_pets"),
            "--cache-dir", str(cache), "--no-baselines"]
    failed = CliRunner().invoke(cli, base)
    assert failed.exit_code == 2 and "pass --on-missing skip" in failed.output
    built = CliRunner().invoke(cli, ["data", "build", "oxford_pets", "--root", str(root / "oxford_pets"),
                                     "--on-missing", "skip", "--cache-dir", str(cache)])
    assert built.exit_code == 0, built.output
    result = CliRunner().invoke(cli, base + ["--on-missing", "skip"])
    assert result.exit_code == 0 and "using the build in" in result.output, result.output
    assert "36 of 3,669 images: not the published protocol" in result.output


def test_multilabel_manifest_is_scored_with_map(tmp_path, trained_shapes_export):
    from sklearn.metrics import average_precision_score

    colors = ["red", "green", "blue"]
    records = []
    for n in range(6):
        path = fx.image(tmp_path / f"{n}.png", n)
        records.append({"image": str(path), "label": [colors[n % 3]] + ([colors[(n + 1) % 3]] if n % 2 else [])})
    manifest = tmp_path / "multi.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    model = fuse.load(trained_shapes_export)
    report = fuse.eval.run_zeroshot(model, manifest, templates="short", baselines=False)
    assert report["multilabel"]
    templates = fuse.eval.load_templates("short")
    cls = fuse.eval.class_embeddings(lambda t: F.normalize(model.embed("text", t), dim=-1), sorted(colors), templates)
    scores = F.normalize(model.embed("image", [r["image"] for r in records]), dim=-1) @ cls.T
    truth = torch.tensor([[c in r["label"] for c in sorted(colors)] for r in records]).int()
    want = sum(average_precision_score(truth[:, c], scores[:, c]) for c in range(3)) / 3 * 100
    assert report["metrics"]["model"]["mAP"] == pytest.approx(want, abs=1e-3)
    result = CliRunner().invoke(cli, ["eval", str(trained_shapes_export), "--task", "zeroshot", "--data", str(manifest),
                                      "--templates", "short", "--no-baselines", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0 and "mAP" in result.output and (tmp_path / "out" / "worst_classes.png").is_file()
    with pytest.raises(fuse.DataError, match="'label' holds 2 labels; this takes one label per item"):
        fuse.eval.run_probe(model, manifest, test_fraction=0.5, modality="image")   # never just the first label


def build(name, root, cache, *args):
    result = CliRunner().invoke(cli, ["data", "build", name, "--root", str(root), "--cache-dir", str(cache), *args])
    return result


def test_imagenet_as_kaggle_ships_it(tmp_path):
    root = fx.write_imagenet(tmp_path / "kaggle", layout="solution")
    kaggle = root / "ILSVRC" / "Data" / "CLS-LOC"
    kaggle.mkdir(parents=True)
    (root / "val").rename(kaggle / "val")
    result = build("imagenet", root, tmp_path / "cache")
    assert result.exit_code == 0 and "val: /" in result.output, result.output
    records = [json.loads(x) for x in Path(result.output.split("val: ")[1].strip()).read_text().splitlines()]
    assert len(records) == 8 and all("ILSVRC/Data/CLS-LOC/val" in r["image"] for r in records)


def test_imagenet_as_coop_holds_it(tmp_path):
    root = fx.write_imagenet(tmp_path / "imagenet")
    (root / "images").mkdir()
    (root / "val").rename(root / "images" / "val")
    (root / "classnames.txt").write_text("n01440764 tench\n")   # CoOp's; the shipped names are used
    result = build("imagenet", root, tmp_path / "cache")
    assert result.exit_code == 0 and "val: /" in result.output, result.output


def test_coco_with_only_captions_val2017(tmp_path):
    root = fx.write_coco2017(tmp_path / "coco")
    (root / "annotations" / "captions_train2017.json").unlink()
    result = build("coco", root, tmp_path / "cache")
    assert result.exit_code == 0 and "val: /" in result.output and "train:" not in result.output, result.output


def test_msrvtt_split_files_keep_the_test_split(tmp_path):
    root = fx.write_msrvtt(tmp_path / "msrvtt", with_1k=False)
    info = json.loads((root / "videodatainfo.json").read_text())
    (root / "videodatainfo.json").unlink()
    for name, keep in (("train_val_videodatainfo.json", {"train", "validate"}), ("test_videodatainfo.json", {"test"})):
        videos = [v for v in info["videos"] if v["split"] in keep]
        ids = {v["video_id"] for v in videos}
        (root / name).write_text(json.dumps({"info": info["info"], "videos": videos,
                                             "sentences": [s for s in info["sentences"] if s["video_id"] in ids]}))
    result = build("msrvtt", root, tmp_path / "cache")
    assert result.exit_code == 0 and "test 2" in result.output, result.output
    (root / "test_videodatainfo.json").unlink()
    result = build("msrvtt", root, tmp_path / "cache")
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "put test_videodatainfo.json (the 2,990 test videos) " \
        "beside it" in errors[0]
