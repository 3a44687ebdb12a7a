"""The suite's sets as torchvision's dataset classes find them on disk (``torchvision.datasets.Food101(root)``
reads ``root/food-101/``; each reader here takes that inner folder). Labels are torchvision's targets (the
same class order CLIP's and clip_benchmark's name lists follow); the sets torchvision gives no split
(Caltech101, SUN397, EuroSAT) are one split, ``all``. ``.mat`` files need scipy, as torchvision's do."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import fuse

from .layout import IMAGE_EXT, read_json


@dataclass
class Layout:
    splits: dict[str, list[tuple[Path, int]]]   # split -> (image path, class index)
    classes: int | None                         # the class count the layout's own class file lists
    source: Path                                # the file that defines the labels (named in errors)
    coop: bool = False                          # read from CoOp's split file (its class subset may differ)


# What marks each set's torchvision folder (relative to it), also quoted in the "neither layout" error.
MARKERS = {
    "food101": "meta/test.json", "oxford_pets": "annotations/test.txt", "caltech101": "101_ObjectCategories/",
    "stanford_cars": "devkit/cars_meta.mat", "flowers102": "setid.mat", "fgvc_aircraft": "data/variants.txt",
    "sun397": "ClassName.txt", "dtd": "labels/test1.txt", "eurosat": "2750/",
}


def holds(name: str, folder: Path) -> bool:
    """Whether ``folder`` is the set's torchvision folder (for FGVC-Aircraft also CoOp's copy of its data/)."""
    if name == "fgvc_aircraft" and (folder / "variants.txt").is_file():
        return True
    marker = folder / MARKERS[name]
    return marker.is_dir() if MARKERS[name].endswith("/") else marker.is_file()


def _lines(path: Path, dataset: str) -> list[str]:
    if not path.is_file():
        raise fuse.DataError(f"{dataset}: {path} not found; use the torchvision folder as distributed.")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _loadmat(path: Path, dataset: str):
    try:
        from scipy.io import loadmat
    except ImportError:
        raise fuse.DataError(f"{dataset}: reading {path.name} needs scipy: pip install 'fuse-align[datasets]'.") from None
    if not path.is_file():
        raise fuse.DataError(f"{dataset}: {path} not found; use the torchvision folder as distributed.")
    return loadmat(io.BytesIO(path.read_bytes()), squeeze_me=True)


def _folders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def read_food101(folder: Path) -> Layout:
    """meta/{train,test}.json ({class: ["class/id", ...]}) and images/<class>/<id>.jpg; classes sorted."""
    splits, classes = {}, None
    for split in ("train", "test"):
        path = folder / "meta" / f"{split}.json"
        if path.is_file():
            meta = read_json(path, "food101")
            classes = sorted(meta)
            index = {c: i for i, c in enumerate(classes)}
            splits[split] = [(folder / "images" / f"{rel}.jpg", index[c]) for c in classes for rel in meta[c]]
    listed = folder / "meta" / "classes.txt"
    if listed.is_file() and len(_lines(listed, "food101")) != len(classes):
        raise fuse.DataError(f"food101: {listed} lists {len(_lines(listed, 'food101'))} classes but "
                             f"{folder / 'meta'}/*.json label {len(classes)}; use the files as distributed.")
    return Layout(splits, len(classes), folder / "meta" / "test.json")


def read_oxford_pets(folder: Path) -> Layout:
    """annotations/{trainval,test}.txt ('Abyssinian_100 1 1 1': image, class id from 1, species, breed id)."""
    splits = {}
    for split in ("trainval", "test"):
        path = folder / "annotations" / f"{split}.txt"
        if path.is_file():
            rows = [line.split() for line in _lines(path, "oxford_pets") if not line.startswith("#")]
            splits["train" if split == "trainval" else split] = [
                (folder / "images" / f"{r[0]}.jpg", int(r[1]) - 1) for r in rows]
    return Layout(splits, None, folder / "annotations" / "test.txt")


def read_caltech101(folder: Path) -> Layout:
    """101_ObjectCategories/<category>/image_NNNN.jpg, categories sorted without BACKGROUND_Google."""
    base = folder / "101_ObjectCategories"
    categories = [c for c in _folders(base) if c != "BACKGROUND_Google"]
    items = [(p, i) for i, c in enumerate(categories) for p in sorted((base / c).glob("image_*.jpg"))]
    return Layout({"all": items}, len(categories), base)


def read_stanford_cars(folder: Path) -> Layout:
    """devkit/cars_meta.mat (class_names), cars_{train,test}_annos(_withlabels).mat (fname, class from 1)."""
    names = _loadmat(folder / "devkit" / "cars_meta.mat", "stanford_cars")["class_names"]
    splits = {}
    for split, annos, images in (("train", folder / "devkit" / "cars_train_annos.mat", "cars_train"),
                                 ("test", folder / "cars_test_annos_withlabels.mat", "cars_test")):
        if annos.is_file():
            rows = _loadmat(annos, "stanford_cars")["annotations"]
            splits[split] = [(folder / images / str(a["fname"]), int(a["class"]) - 1) for a in rows]
    return Layout(splits, len(names), folder / "devkit" / "cars_meta.mat")


def read_flowers102(folder: Path) -> Layout:
    """jpg/image_NNNNN.jpg, imagelabels.mat (labels from 1), setid.mat (trnid, valid, tstid)."""
    labels = _loadmat(folder / "imagelabels.mat", "flowers102")["labels"].tolist()
    sets = _loadmat(folder / "setid.mat", "flowers102")
    splits = {split: [(folder / "jpg" / f"image_{i:05d}.jpg", labels[i - 1] - 1) for i in sets[key].tolist()]
              for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid"))}
    return Layout(splits, None, folder / "imagelabels.mat")


def read_fgvc_aircraft(folder: Path) -> Layout:
    """data/variants.txt (the 100 classes in order), data/images_variant_{split}.txt ('1025794 707-320'); CoOp
    reads the same files from a folder holding data/'s contents."""
    data = folder / "data" if (folder / "data" / "variants.txt").is_file() else folder
    variants = _lines(data / "variants.txt", "fgvc_aircraft")
    index = {v: i for i, v in enumerate(variants)}
    splits = {}
    for split in ("train", "val", "test"):
        path = data / f"images_variant_{split}.txt"
        if path.is_file():
            rows = [line.split(" ", 1) for line in _lines(path, "fgvc_aircraft")]
            unknown = sorted({r[1] for r in rows if r[1] not in index})
            if unknown:
                raise fuse.DataError(f"fgvc_aircraft: {path} names variants not in {data / 'variants.txt'}, e.g. "
                                     f"{unknown[0]}; use the files as distributed.")
            splits[split] = [(data / "images" / f"{r[0]}.jpg", index[r[1]]) for r in rows]
    return Layout(splits, len(variants), data / "variants.txt")


def read_sun397(folder: Path) -> Layout:
    """ClassName.txt ('/a/abbey', in class order) and <letter>/<class>/sun_*.jpg."""
    classes = [c[3:] for c in _lines(folder / "ClassName.txt", "sun397")]
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for path in sorted(folder.rglob("sun_*.jpg")):
        key = "/".join(path.relative_to(folder).parts[1:-1])
        if key not in index:
            raise fuse.DataError(f"sun397: {path} is in a class folder ClassName.txt does not list ({key}); use the "
                                 "files as distributed.")
        items.append((path, index[key]))
    return Layout({"all": items}, len(classes), folder / "ClassName.txt")


def read_dtd(folder: Path) -> Layout:
    """labels/{train,val,test}1.txt ('banded/banded_0002.jpg', partition 1) and images/<class>/; classes sorted."""
    classes = _folders(folder / "images")
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split in ("train", "val", "test"):
        path = folder / "labels" / f"{split}1.txt"
        if path.is_file():
            splits[split] = [(folder / "images" / rel, index[rel.split("/")[0]]) for rel in _lines(path, "dtd")
                             if rel.split("/")[0] in index]
    return Layout(splits, len(classes), folder / "images")


def read_eurosat(folder: Path) -> Layout:
    """2750/<Class>/<Class>_N.jpg (the RGB version), classes sorted."""
    base = folder / "2750"
    classes = _folders(base)
    items = [(p, i) for i, c in enumerate(classes) for p in sorted((base / c).iterdir())
             if p.suffix.lower() in IMAGE_EXT]
    return Layout({"all": items}, len(classes), base)

