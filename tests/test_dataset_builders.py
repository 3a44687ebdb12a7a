"""The standard dataset builders (fuse.plugins.datasets) on tiny fixtures in each exact on-disk format:
splits, counts, captions per item, labels, bad roots; checked against torchvision's COCO and ImageNet
devkit parsers and a real img2dataset output folder where those exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import dataset_fixtures as fx
from fuse.cli import cli

DATA = Path(__file__).parent / "data" / "img2dataset"


def build(name: str, root: Path, cache: Path, *args: str, ok: bool = True) -> tuple[dict[str, list[dict]], str]:
    """`fuse data build NAME --root ROOT`: the records of each split (and the output), root left untouched."""
    before = fx.snapshot(root) if root.exists() else {}
    result = CliRunner().invoke(cli, ["data", "build", name, "--root", str(root), "--cache-dir", str(cache), *args])
    assert (fx.snapshot(root) if root.exists() else {}) == before, "a builder wrote into --root"
    if not ok:
        assert result.exit_code == 2, result.output
        return {}, result.output
    assert result.exit_code == 0, result.output
    splits = {}
    for line in result.output.splitlines():
        if ": /" in line and line.split(":")[0].isidentifier():
            split, path = line.split(": ", 1)
            splits[split] = [json.loads(x) for x in Path(path).read_text().splitlines()]
    return splits, result.output


def one_error(out: str) -> str:
    """The output's error, which must be exactly one line."""
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    return errors[0]


def counts(splits):
    return {k: len(v) for k, v in splits.items()}


@pytest.mark.parametrize("layout", ["2014", "2017"])
def test_coco_karpathy_splits_match_images_by_coco_id(tmp_path, layout):
    root = fx.write_coco(tmp_path / "coco", layout)
    splits, _ = build("coco", root, tmp_path / "cache")
    assert counts(splits) == {"train": 5, "val": 2, "test": 5}   # train = train + restval, as the papers train
    assert all(len(r["text"]) == 5 and Path(r["image"]).is_file() for s in splits.values() for r in s)
    karpathy = json.loads((root / "dataset_coco.json").read_text())["images"]
    test = {str(im["cocoid"]): [s["raw"] for s in im["sentences"]] for im in karpathy if im["split"] == "test"}
    assert {r["id"]: r["text"] for r in splits["test"]} == test
    for r in splits["test"]:   # the 2014 or 2017 file of that COCO id
        assert Path(r["image"]).stem.endswith(f"{int(r['id']):012d}")
    apart, _ = build("coco", root, tmp_path / "cache", "--no-restval")
    assert counts(apart) == {"train": 3, "restval": 2, "val": 2, "test": 5}
    limited, _ = build("coco", root, tmp_path / "cache", "--limit", "2")
    assert counts(limited) == {"train": 2, "val": 2, "test": 2}


def test_coco_2017_annotations_agree_with_torchvision(tmp_path):
    from torchvision.datasets import CocoCaptions

    root = fx.write_coco2017(tmp_path / "coco")
    splits, _ = build("coco", root, tmp_path / "cache", "--annotations", "2017")
    assert counts(splits) == {"train": 4, "val": 3}
    for split, records in splits.items():
        ref = CocoCaptions(str(root / f"{split}2017"), str(root / "annotations" / f"captions_{split}2017.json"))
        theirs = {str(ref.ids[i]): [c.strip() for c in ref[i][1]] for i in range(len(ref))}
        assert {r["id"]: r["text"] for r in records} == theirs


def test_flickr30k_and_wrong_annotation_file(tmp_path):
    root = fx.write_flickr(tmp_path / "flickr")
    splits, _ = build("flickr30k", root, tmp_path / "cache")
    assert counts(splits) == {"train": 3, "val": 2, "test": 4}
    assert {len(r["text"]) for r in splits["test"]} == {5}
    (root / "dataset_coco.json").write_text((root / "dataset_flickr30k.json").read_text())
    fx.write_coco(tmp_path / "c")   # COCO's json where Flickr30K's belongs
    (root / "dataset_flickr30k.json").write_text((tmp_path / "c" / "dataset_coco.json").read_text())
    _, out = build("flickr30k", root, tmp_path / "cache", ok=False)
    assert "is Karpathy's split of 'coco', not flickr30k" in one_error(out)


def test_missing_media_is_listed_or_skipped_and_nothing_is_half_written(tmp_path):
    root = fx.write_coco(tmp_path / "coco")
    for p in sorted((root / "val2014").iterdir())[:2]:
        p.unlink()
    _, out = build("coco", root, tmp_path / "cache", ok=False)
    assert "2 of 12 media files are missing" in out and "--on-missing skip" in out
    assert not list((tmp_path / "cache" / "datasets").glob("coco-*/*.jsonl"))
    splits, out = build("coco", root, tmp_path / "cache", "--on-missing", "skip")
    assert sum(counts(splits).values()) == 10 and "skipped 2 of 12" in out


def test_bad_roots_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for name, root, says in [("coco", tmp_path / "nosuch", "is not a folder"),
                             ("coco", tmp_path / "empty", "holds neither dataset_coco.json"),
                             ("flickr30k", tmp_path / "empty", "not found (looked for"),
                             ("esc50", tmp_path / "empty", "meta/esc50.csv not found"),
                             ("imagenet", tmp_path / "empty", "has no class folders"),
                             ("img2dataset", tmp_path / "empty", "holds no shards")]:
        _, out = build(name, root, tmp_path / "cache", ok=False)
        assert says in one_error(out), out
    csv_root = fx.write_clotho(tmp_path / "clotho")
    (csv_root / "clotho_captions_development.csv").write_text("filename,caption\nx.wav,a dog\n")
    _, out = build("clotho", csv_root, tmp_path / "cache", ok=False)
    assert "has no column(s) file_name" in out


def test_audiocaps_skips_missing_clips_with_a_summary(tmp_path):
    root = fx.write_audiocaps(tmp_path / "audiocaps", missing=1)
    splits, out = build("audiocaps", root, tmp_path / "cache")
    assert counts(splits) == {"train": 3, "val": 2, "test": 2}
    assert "skipped 1 of 8 items" in out
    assert [len(r["text"]) for r in splits["train"]] == [1, 1, 1]
    assert {len(r["text"]) for s in ("val", "test") for r in splits[s]} == {5}


def test_clotho_five_captions_per_clip(tmp_path):
    splits, _ = build("clotho", fx.write_clotho(tmp_path / "clotho"), tmp_path / "cache")
    assert counts(splits) == {"train": 3, "val": 2, "test": 2}
    assert all(len(r["text"]) == 5 and Path(r["audio"]).is_file() for s in splits.values() for r in s)


def test_msrvtt_splits_and_the_1k_a_test_set(tmp_path):
    root = fx.write_msrvtt(tmp_path / "msrvtt")
    splits, _ = build("msrvtt", root, tmp_path / "cache")
    assert counts(splits) == {"train": 3, "val": 1, "test": 2, "test_1k": 2}
    assert {len(r["text"]) for r in splits["test"]} == {20} and {len(r["text"]) for r in splits["test_1k"]} == {1}
    info = json.loads((root / "videodatainfo.json").read_text())
    info["videos"][0]["split"] = "training"
    (root / "videodatainfo.json").write_text(json.dumps(info))
    _, out = build("msrvtt", root, tmp_path / "cache", ok=False)
    assert "videos[0]: field 'split': input should be 'train', 'validate' or 'test' (got 'training')" in out


def test_esc50_folds_and_classes(tmp_path):
    splits, out = build("esc50", fx.write_esc50(tmp_path / "esc50"), tmp_path / "cache")
    assert counts(splits) == {**{f"fold{f}": 3 for f in range(1, 6)}, "all": 15}
    assert {r["fold"] for r in splits["fold3"]} == {3}
    table = Path(out.split("all: ")[1].strip()).parent / "classes.tsv"
    assert table.read_text().splitlines() == ["dog\tdog", "rooster\trooster", "crackling_fire\tcrackling fire"]


@pytest.mark.parametrize("layout", ["folders", "devkit", "devkit-tar", "solution"])
def test_imagenet_layouts_give_the_same_labels(tmp_path, layout, monkeypatch):
    root = fx.write_imagenet(tmp_path / "imagenet", layout)
    splits, _ = build("imagenet", root, tmp_path / "cache")
    labels = {r["id"]: r["label"] for r in splits["val"]}
    assert labels == {f"ILSVRC2012_val_{n:08d}": fx.IMAGENET_WNIDS[(n - 1) % 4] for n in range(1, 9)}
    if layout == "devkit-tar":   # torchvision's own devkit parser reads the fixture the same way
        import shutil

        import torchvision.datasets.imagenet as tv

        copy = tmp_path / "tv"
        shutil.copytree(root, copy)
        monkeypatch.setattr(tv, "_verify_archive", lambda *a: None)   # its md5 is the real archive's
        tv.parse_devkit_archive(str(copy))
        _, val_wnids = tv.load_meta_file(str(copy))
        assert [labels[f"ILSVRC2012_val_{n:08d}"] for n in range(1, 9)] == val_wnids


def test_shipped_class_names():
    from fuse.plugins.datasets.layout import class_names

    names, wnids = class_names("imagenet"), class_names("imagenet_synsets")
    assert len(names) == len(wnids) == 1000 and len(set(wnids)) == 1000
    assert (names[0], names[1], names[207], names[999]) == ("tench", "goldfish", "Golden Retriever", "toilet paper")
    assert wnids[0] == "n01440764" and wnids[999] == "n15075141"
    assert len(class_names("cifar10")) == 10 and len(set(class_names("cifar100"))) == 100
    assert len(class_names("esc50")) == 50 and class_names("esc50")[0] == "dog"


def test_class_folders_with_splits(tmp_path):
    root = fx.write_class_folders(tmp_path / "shapes", ("train", "val"))
    splits, _ = build("folder", root, tmp_path / "cache", "--limit", "4")
    assert counts(splits) == {"train": 4, "val": 4}
    assert len({r["label"] for r in splits["train"]}) == 4   # --limit keeps every class
    wav = tmp_path / "mixed"
    fx.write_class_folders(wav)
    fx.wav(wav / "red_circle" / "x.wav", 0)
    _, out = build("folder", wav, tmp_path / "cache", ok=False)
    assert "mixes audio and image files; pass --modality" in out
    only, _ = build("folder", wav, tmp_path / "cache", "--modality", "audio")
    assert counts(only) == {"all": 1} and "audio" in only["all"][0]


@pytest.mark.parametrize("layout", ["files", "webdataset"])
@pytest.mark.parametrize("metadata", ["json", "parquet"])
def test_img2dataset_real_output(tmp_path, layout, metadata):
    """A folder img2dataset itself wrote (tests/data/img2dataset): 5 successes with captions, 1 failure."""
    import shutil

    root = tmp_path / layout
    shutil.copytree(DATA / layout, root)
    splits, out = build("img2dataset", root, tmp_path / "cache", "--metadata", metadata)
    urls = [line.split(",", 1) for line in (DATA / "urls.csv").read_text().splitlines()[1:]]
    assert sorted(r["text"] for r in splits["train"]) == sorted(c for u, c in urls if "nosuch" not in u)
    manifest = Path(out.split("train: ")[1].strip())
    for r in splits["train"]:   # tar members are copied into the build folder, named relative to the manifest
        assert (manifest.parent / r["image"]).is_file() and Path(r["image"]).is_absolute() == (layout == "files")
    assert ("1 without" in out) == (metadata == "parquet")   # failures appear only in the parquet


def test_data_build_help_documents_each_dataset():
    runner = CliRunner()
    for name, flags in {"coco": ["--root", "--limit", "--annotations", "--restval"], "msrvtt": ["--test-1k"],
                        "img2dataset": ["--metadata", "--val-shards"], "audiocaps": ["--on-missing"]}.items():
        out = runner.invoke(cli, ["data", "build", name, "--help"]).output
        assert all(f in out for f in flags), out
    assert "esc50" in runner.invoke(cli, ["data", "build", "--help"]).output


def test_shipped_recipes_naming_standard_datasets_resolve(tmp_path):
    """Every recipe in recipes/ whose data names a standard dataset builds its train and val splits from a
    fixture root of that dataset."""
    import yaml

    from fuse.data.load import source_manifests
    from fuse.recipes.plan import load_plan

    writers = {"coco": fx.write_coco, "flickr30k": fx.write_flickr, "audiocaps": fx.write_audiocaps,
               "clotho": fx.write_clotho, "msrvtt": fx.write_msrvtt}
    resolved = []
    for path in sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml")):
        data = yaml.safe_load(path.read_text()).get("data", {})
        name = (data.get("dataset") or {}).get("name")
        if name in writers:
            root = writers[name](tmp_path / path.stem)
            plan = load_plan(path, [f"data.dataset.options.root={root}"])
            splits = source_manifests(plan.recipe.data, tmp_path / "cache", "data")
            assert set(splits) == {"train", "val"} and all(p.stat().st_size for p in splits.values())
            resolved.append((path.stem, name))
    assert resolved == [("audio_text", "audiocaps"), ("shared_encoder_distill", "coco"), ("video_text", "msrvtt"),
                        ("vision_text", "coco")]
