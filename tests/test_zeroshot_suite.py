"""The zero-shot suite's builders on fixtures in each exact layout: torchvision's dataset classes read the same
folders and give the same labels and class counts; CoOp's split files keep CoOp's labels; the binary CIFAR/STL-10
decode to torchvision's pixels; shipped names and templates are clip_benchmark's; bad input is one line."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import suite_fixtures as sf
from test_dataset_builders import build as build_records
from fuse.cli import cli
from fuse.plugins.datasets.layout import class_names


def build(name: str, root: Path, cache: Path, *args: str) -> tuple[dict[str, list[dict]], list[list[str]], Path]:
    """`fuse data build NAME --root ROOT` (test_dataset_builders.build: root left untouched): each split's
    records, classes.tsv's rows and the build folder."""
    splits, output = build_records(name, root, cache, *args)
    folder = next(Path(line.split(": ", 1)[1]).parent for line in output.splitlines() if ": /" in line)
    rows = [r.split("\t") for r in (folder / "classes.tsv").read_text().splitlines()]
    return splits, rows, folder


def one_error(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    return errors[0]


def labelled(records: list[dict]) -> dict[str, int]:
    return {str(Path(r["image"]).resolve()): int(r["label"]) for r in records}


def _caltech(root):
    import os

    from torchvision.datasets import Caltech101

    ds = Caltech101(str(root))
    pairs = [(os.path.join(ds.root, "101_ObjectCategories", ds.categories[y], f"image_{i:04d}.jpg"), y)
             for y, i in zip(ds.y, ds.index)]
    return pairs, len(ds.categories)


def _torchvision(name: str, root: Path, monkeypatch):
    """(image path, target) pairs and class count from torchvision's own class for the set."""
    import torchvision.datasets as tv
    import torchvision.datasets.flowers102 as flowers_module

    if name == "caltech101":
        return _caltech(root)
    if name == "flowers102":   # torchvision checks the real files' md5 sums; only that check is bypassed
        monkeypatch.setattr(flowers_module, "check_integrity", lambda *a, **k: True)
    cls, kw = {"food101": (tv.Food101, {"split": "test"}), "oxford_pets": (tv.OxfordIIITPet, {"split": "test"}),
               "flowers102": (tv.Flowers102, {"split": "test"}), "dtd": (tv.DTD, {"split": "test"}),
               "fgvc_aircraft": (tv.FGVCAircraft, {"split": "test"}),
               "stanford_cars": (tv.StanfordCars, {"split": "test"}), "sun397": (tv.SUN397, {}),
               "eurosat": (tv.EuroSAT, {})}[name]
    ds = cls(str(root), **kw)
    if hasattr(ds, "_samples"):
        pairs = ds._samples
    elif hasattr(ds, "samples"):
        pairs = ds.samples
    else:
        pairs = list(zip(getattr(ds, "_image_files", getattr(ds, "_images", None)), ds._labels))
    return pairs, len(ds.classes)


@pytest.mark.parametrize("name", ["food101", "oxford_pets", "flowers102", "dtd", "fgvc_aircraft", "stanford_cars",
                                  "sun397", "eurosat", "caltech101"])
def test_torchvision_layout_reads_as_torchvision_does(tmp_path, name, monkeypatch):
    root = getattr(sf, name)(tmp_path / "tv")
    splits, rows, folder = build(name, root, tmp_path / "cache")
    split = "test" if "test" in splits else "all"
    pairs, count = _torchvision(name, root, monkeypatch)
    assert labelled(splits[split]) == {str(Path(p).resolve()): int(t) for p, t in pairs}
    assert len(rows) == count
    assert (folder / "templates.txt").read_text() == (Path(sf.__file__).parents[1] / "plugins" / "datasets" /
                                                      "templates" / f"{name}.txt").read_text()


def test_coop_split_keeps_coop_labels_and_clip_names(tmp_path):
    root = sf.coop(tmp_path, "oxford_pets", "split_zhou_OxfordPets.json", "images", "oxford_pets", per_class=2)
    split = json.loads((root / "oxford_pets" / "split_zhou_OxfordPets.json").read_text())
    splits, rows, _ = build("oxford_pets", root / "oxford_pets", tmp_path / "cache")
    assert {s: len(v) for s, v in splits.items()} == {s: len(split[s]) for s in ("train", "val", "test")}
    base = (root / "oxford_pets" / "images").resolve()
    assert labelled(splits["test"]) == {str(base / rel): label for rel, label, _ in split["test"]}
    assert [r[1] for r in rows] == class_names("oxford_pets") and rows[0] == ["0", "Abyssinian"]


def test_coop_caltech101_leaves_out_background_and_faces_easy(tmp_path):
    root = sf.caltech101(tmp_path, coop=True)
    splits, rows, _ = build("caltech101", root / "caltech-101", tmp_path / "cache")
    assert len(rows) == 100 and rows[0][1] == "off-center face" and rows[1][1] == "leopard"
    assert "background" not in [r[1] for r in rows] and "centered face" not in [r[1] for r in rows]
    tv_splits, tv_rows, _ = build("caltech101", sf.caltech101(tmp_path / "tv"), tmp_path / "cache")
    assert len(tv_rows) == 101 and tv_rows[1][1] == "centered face"   # torchvision keeps Faces_easy


def test_fgvc_aircraft_as_coop_holds_it(tmp_path):
    """CoOp's fgvc_aircraft/ folder is the contents of the archive's data/ folder."""
    root = sf.fgvc_aircraft(tmp_path / "tv")
    (root / "fgvc-aircraft-2013b" / "data").rename(tmp_path / "fgvc_aircraft")
    splits, rows, _ = build("fgvc_aircraft", tmp_path / "fgvc_aircraft", tmp_path / "cache")
    assert len(splits["test"]) == len(rows) == 100 and splits["test"][0]["label"] == "0"


def test_ucf101_midframes(tmp_path):
    root = sf.coop(tmp_path, "ucf101", "split_zhou_UCF101.json", "UCF-101-midframes", "ucf101")
    splits, rows, folder = build("ucf101", root / "ucf101", tmp_path / "cache")
    assert len(splits["test"]) == len(rows) == 101 and rows[0][1] == "Apply Eye Makeup"
    assert len((folder / "templates.txt").read_text().splitlines()) == 48


@pytest.mark.parametrize("name, folder, subset", [("imagenet_a", "imagenet-a", "imagenet_a_wnids"),
                                                  ("imagenet_r", "imagenet-r", "imagenet_r_wnids"),
                                                  ("imagenet_sketch", "sketch", None),
                                                  ("imagenet_v2", "imagenetv2-matched-frequency-format-val", None)])
def test_imagenet_variants_map_to_imagenet_classes(tmp_path, name, folder, subset):
    synsets, names = class_names("imagenet_synsets"), class_names("imagenet")
    wnids = class_names(subset)[::40] if subset else ["n01440764", "n02099601", "n15075141"]
    root = sf.imagenet_variant(tmp_path / name, folder, wnids, by_index=name == "imagenet_v2")
    splits, rows, _ = build(name, root, tmp_path / "cache")
    assert sorted(r["label"] for r in splits["test"]) == sorted(wnids)
    kept = class_names(subset) if subset else synsets
    assert len(rows) == len(kept) == (200 if subset else 1000)
    assert rows == [[w, names[synsets.index(w)]] for w in synsets if w in set(kept)]   # ImageNet's order and names


def _tv_cifar(tmp_path, monkeypatch, images, labels, name):
    """torchvision reads only CIFAR's python version: the test writes it from the same arrays (never fuse)."""
    import pickle

    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)
    folder = tmp_path / "py" / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True)
    flat = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)
    key = "labels" if name == "cifar10" else "fine_labels"
    files = ([f"data_batch_{n}" for n in range(1, 6)] + ["test_batch"] if name == "cifar10" else ["train", "test"])
    for f in files:
        (folder / f).write_bytes(pickle.dumps({"data": flat, key: labels.tolist()}))
    names = [n.replace(" ", "_") for n in class_names(name)]
    meta = ("batches.meta", "label_names") if name == "cifar10" else ("meta", "fine_label_names")
    (folder / meta[0]).write_bytes(pickle.dumps({meta[1]: names}))
    ds = (cifar.CIFAR10 if name == "cifar10" else cifar.CIFAR100)(str(tmp_path / "py"), train=False)
    return ds.data, np.array(ds.targets), len(ds.classes)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "stl10"])
def test_binary_versions_decode_as_torchvision(tmp_path, name, monkeypatch):
    classes = len(class_names(name))
    images, labels = sf.cifar_arrays(2 * classes, classes, 96 if name == "stl10" else 32)
    root = getattr(sf, f"{name}_binary")(tmp_path / name, images, labels)
    splits, rows, folder = build(name, root, tmp_path / "cache")
    if name == "stl10":
        import torchvision.datasets as tv

        monkeypatch.setattr(tv.STL10, "_check_integrity", lambda self: True)
        ds = tv.STL10(str(root), split="test")
        tv_images, tv_labels, tv_classes = ds.data.transpose(0, 2, 3, 1), ds.labels, len(ds.classes)
    else:
        tv_images, tv_labels, tv_classes = _tv_cifar(tmp_path, monkeypatch, images, labels, name)
    by_index = {int(r["id"].split("/")[1]): r for r in splits["test"]}
    assert len(by_index) == len(tv_labels) and len(rows) == tv_classes == classes
    for n, record in by_index.items():
        assert int(record["label"]) == tv_labels[n]
        assert np.array_equal(np.asarray(Image.open(folder / record["image"])), tv_images[n])


def test_shipped_names_and_templates_are_clip_benchmarks():
    import clip_benchmark
    from clip_benchmark.datasets import builder

    data = Path(clip_benchmark.__file__).parent / "datasets"
    names = json.loads((data / "en_classnames.json").read_text())
    templates = json.loads((data / "en_zeroshot_classification_templates.json").read_text())
    for ours, theirs in {"oxford_pets": "pets", "flowers102": "flowers", "caltech101": "caltech101",
                         "eurosat": "eurosat", "imagenet": "imagenet1k"}.items():
        assert class_names(ours) == names[theirs], ours
    from fuse.plugins.datasets.suite import SETS, set_templates

    assert all(len(class_names(name)) == spec.classes for name, spec in SETS.items())

    for ours, theirs in {"food101": "food101", "oxford_pets": "pets", "caltech101": "caltech101",
                         "stanford_cars": "cars", "flowers102": "flowers", "fgvc_aircraft": "fgvc_aircraft",
                         "sun397": "sun397", "dtd": "dtd", "eurosat": "eurosat", "stl10": "stl10",
                         "cifar10": "cifar10", "cifar100": "cifar100"}.items():
        assert set_templates(ours).splitlines() == [t.replace("{c}", "{}") for t in templates[theirs]], ours
    core_templates = (Path(sf.__file__).parents[1] / "core" / "templates" / "imagenet.txt").read_text().splitlines()
    assert core_templates == [t.replace("{c}", "{}") for t in templates["imagenet1k"]]
    source = Path(builder.__file__).read_text()
    for var, ours in (("imagenet_a_wnids", "imagenet_a_wnids"), ("imagenet_r_wnids", "imagenet_r_wnids")):
        listed = ast.literal_eval(source.split(f"{var} = ", 1)[1].split("\n", 1)[0])
        assert sorted(listed) == class_names(ours)


def test_bad_suite_input_is_one_line_and_leaves_nothing(tmp_path):
    cache = tmp_path / "cache"
    (tmp_path / "empty" / "food-101").mkdir(parents=True)
    assert "food101: " in one_error(["data", "build", "food101", "--root", str(tmp_path / "empty"),
                                     "--cache-dir", str(cache)])
    err = one_error(["data", "build", "food101", "--root", str(tmp_path / "empty"), "--cache-dir", str(cache)])
    assert "is in neither known layout; it needs CoOp's split_zhou_Food101.json beside images/ or torchvision's " \
           "layout (meta/test.json)" in err
    root = sf.food101(tmp_path / "food")
    listed = root / "food-101" / "meta" / "classes.txt"
    listed.write_text("\n".join(listed.read_text().splitlines()[:100]) + "\n")
    assert "classes.txt lists 100 classes but" in one_error(["data", "build", "food101", "--root", str(root),
                                                              "--cache-dir", str(cache)])
    air = sf.fgvc_aircraft(tmp_path / "air")
    variants = air / "fgvc-aircraft-2013b" / "data" / "variants.txt"
    variants.write_text("\n".join(variants.read_text().splitlines()[:99]) + "\n")
    assert "names variants not in" in one_error(["data", "build", "fgvc_aircraft", "--root", str(air),
                                                  "--cache-dir", str(cache)])
    coop = sf.coop(tmp_path / "coop", "eurosat", "split_zhou_EuroSAT.json", "2750", "eurosat")
    split = coop / "eurosat" / "split_zhou_EuroSAT.json"
    data = json.loads(split.read_text())
    data["test"][0][1] = 10
    split.write_text(json.dumps(data))
    assert "has labels 0..10 but eurosat has 10 classes" in one_error(
        ["data", "build", "eurosat", "--root", str(coop / "eurosat"), "--cache-dir", str(cache)])
    split.write_text(json.dumps({"train": [], "test": []}))
    assert "has no 'val' list" in one_error(["data", "build", "eurosat", "--root", str(coop / "eurosat"),
                                                  "--cache-dir", str(cache)])
    (tmp_path / "py" / "cifar-10-batches-py").mkdir(parents=True)
    assert "holds the python version (cifar-10-batches-py, pickles, which fuse never loads); download the binary " \
           "version https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in one_error(
               ["data", "build", "cifar10", "--root", str(tmp_path / "py"), "--cache-dir", str(cache)])
    assert not list(cache.rglob("fuse_dataset.json")) and not list(cache.rglob("*.jsonl"))


def test_a_bad_mat_file_is_one_line(tmp_path):
    from scipy.io import savemat

    root, cache = sf.flowers102(tmp_path / "fl"), tmp_path / "cache"
    labels = root / "flowers-102" / "imagelabels.mat"
    labels.write_bytes(b"not a MATLAB file")
    assert "imagelabels.mat is not a MATLAB file scipy reads" in one_error(
        ["data", "build", "flowers102", "--root", str(root), "--cache-dir", str(cache)])
    savemat(labels, {"other": [1, 2]})
    assert "imagelabels.mat has no 'labels' array" in one_error(
        ["data", "build", "flowers102", "--root", str(root), "--cache-dir", str(cache)])
