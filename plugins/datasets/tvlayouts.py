"""The suite's sets as torchvision's dataset classes find them on disk (``torchvision.datasets.Food101(root)``
reads ``root/food-101/``; each reader here takes that inner folder). Labels are torchvision's targets (the
same class order CLIP's and clip_benchmark's name lists follow); the sets torchvision gives no split
(Caltech101, SUN397, EuroSAT) are one split, ``all``. ``.mat`` files need scipy, as torchvision's do."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pydantic

import fuse

from .layout import IMAGE_EXT, read_json


R = TypeVar("R", bound=pydantic.BaseModel)


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


class Name(fuse.foreign.Record):
    """A line of a class list (the whole line: names may hold spaces)."""

    name: str


class PetsLine(fuse.foreign.Record):
    """A line of Oxford-IIIT Pet's annotations/{trainval,test}.txt: 'Abyssinian_100 1 1 1'."""

    image: fuse.foreign.MediaPath   # the image's name under images/, without .jpg
    class_id: int                   # from 1
    species: int
    breed: int


class AircraftLine(fuse.foreign.Record):
    """A line of FGVC-Aircraft's images_variant_{split}.txt: '1025794 707-320' (variants may hold spaces)."""

    image: fuse.foreign.MediaPath   # the image's name under images/, without .jpg
    variant: str


class DtdLine(fuse.foreign.Record):
    """A line of DTD's labels/{split}1.txt: 'banded/banded_0002.jpg', relative to images/."""

    path: fuse.foreign.MediaPath


class Food101Meta(pydantic.RootModel[dict[str, list[str]]]):
    """Food-101's meta/{train,test}.json: {class: ["class/id", ...]} (a mapping, not a list of records)."""


# The text files of each torchvision layout (for tests/test_foreign_files.py); the .mat files (Cars, Flowers)
# and Food-101's meta/*.json mapping are not records of a text format, so they are read (bounded, typed) but
# not declared here; Caltech101 and EuroSAT read folder and file names only.
FOREIGN = {
    "food101": (fuse.ForeignFile("**/meta/classes.txt", "lines", Name),),
    "oxford_pets": (fuse.ForeignFile("**/annotations/trainval.txt", "lines", PetsLine),
                    fuse.ForeignFile("**/annotations/test.txt", "lines", PetsLine)),
    "fgvc_aircraft": (fuse.ForeignFile("**/variants.txt", "lines", Name),
                      fuse.ForeignFile("**/images_variant_*.txt", "lines", AircraftLine)),
    "sun397": (fuse.ForeignFile("**/ClassName.txt", "lines", Name),),
    "dtd": (fuse.ForeignFile("**/labels/*1.txt", "lines", DtdLine),),
}


def _rows(path: Path, dataset: str, schema: type[R]) -> list[R]:
    if not path.is_file():
        raise fuse.DataError(f"{dataset}: {path} not found; use the torchvision folder as distributed.")
    return fuse.foreign.read_rows(path, schema, dataset)


def _names(path: Path, dataset: str) -> list[str]:
    return [row.name.strip() for row in _rows(path, dataset, Name)]


def _loadmat(path: Path, dataset: str, *keys: str) -> list:
    """The named arrays of a MATLAB file (read bounded); an unreadable file or a missing array is one line."""
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError:
        raise fuse.DataError(f"{dataset}: reading {path.name} needs scipy: pip install 'fuse-align[datasets]'.") from None
    if not path.is_file():
        raise fuse.DataError(f"{dataset}: {path} not found; use the torchvision folder as distributed.")
    try:
        mat = loadmat(io.BytesIO(fuse.foreign.read_bytes(path, dataset)), squeeze_me=True)
    except (MatReadError, ValueError, TypeError, OSError, NotImplementedError) as exc:
        raise fuse.DataError(f"{dataset}: {path} is not a MATLAB file scipy reads ({exc}); use the file as "
                             "distributed.") from None
    absent = [k for k in keys if k not in mat]
    if absent:
        raise fuse.DataError(f"{dataset}: {path} has no '{absent[0]}' array; use the file as distributed.")
    return [mat[k] for k in keys]


def _folders(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _inside(base: Path, value: str, source: Path, where: str, dataset: str, allow_outside: bool) -> Path:
    return fuse.foreign.inside(base, value, f"{source} {where}", dataset, allow_outside)


def read_food101(folder: Path, allow_outside: bool) -> Layout:
    """meta/{train,test}.json ({class: ["class/id", ...]}) and images/<class>/<id>.jpg; classes sorted."""
    splits, classes = {}, None
    for split in ("train", "test"):
        path = folder / "meta" / f"{split}.json"
        if path.is_file():
            meta = fuse.foreign.validate(Food101Meta, read_json(path, "food101"), path, "meta", "food101").root
            classes = sorted(meta)
            index = {c: i for i, c in enumerate(classes)}
            splits[split] = [(_inside(folder / "images", f"{rel}.jpg", path, c, "food101", allow_outside), index[c])
                             for c in classes for rel in meta[c]]
    listed = folder / "meta" / "classes.txt"
    if listed.is_file() and len(_names(listed, "food101")) != len(classes):
        raise fuse.DataError(f"food101: {listed} lists {len(_names(listed, 'food101'))} classes but "
                             f"{folder / 'meta'}/*.json label {len(classes)}; use the files as distributed.")
    return Layout(splits, len(classes), folder / "meta" / "test.json")


def read_oxford_pets(folder: Path, allow_outside: bool) -> Layout:
    """annotations/{trainval,test}.txt ('Abyssinian_100 1 1 1': image, class id from 1, species, breed id)."""
    splits = {}
    for split in ("trainval", "test"):
        path = folder / "annotations" / f"{split}.txt"
        if path.is_file():
            splits["train" if split == "trainval" else split] = [
                (_inside(folder / "images", f"{r.image}.jpg", path, "image", "oxford_pets", allow_outside),
                 r.class_id - 1) for r in _rows(path, "oxford_pets", PetsLine)]
    return Layout(splits, None, folder / "annotations" / "test.txt")


def read_caltech101(folder: Path, allow_outside: bool) -> Layout:
    """101_ObjectCategories/<category>/image_NNNN.jpg, categories sorted without BACKGROUND_Google (folder and
    file names only: nothing names a path)."""
    base = folder / "101_ObjectCategories"
    categories = [c for c in _folders(base) if c != "BACKGROUND_Google"]
    items = [(p, i) for i, c in enumerate(categories) for p in sorted((base / c).glob("image_*.jpg"))]
    return Layout({"all": items}, len(categories), base)


def read_stanford_cars(folder: Path, allow_outside: bool) -> Layout:
    """devkit/cars_meta.mat (class_names), cars_{train,test}_annos(_withlabels).mat (fname, class from 1)."""
    names, = _loadmat(folder / "devkit" / "cars_meta.mat", "stanford_cars", "class_names")
    splits = {}
    for split, annos, images in (("train", folder / "devkit" / "cars_train_annos.mat", "cars_train"),
                                 ("test", folder / "cars_test_annos_withlabels.mat", "cars_test")):
        if annos.is_file():
            rows, = _loadmat(annos, "stanford_cars", "annotations")
            splits[split] = [(_inside(folder / images, str(a["fname"]), annos, "fname", "stanford_cars", allow_outside),
                              int(a["class"]) - 1) for a in rows]
    return Layout(splits, len(names), folder / "devkit" / "cars_meta.mat")


def read_flowers102(folder: Path, allow_outside: bool) -> Layout:
    """jpg/image_NNNNN.jpg, imagelabels.mat (labels from 1), setid.mat (trnid, valid, tstid): numbers, no paths."""
    labels, = _loadmat(folder / "imagelabels.mat", "flowers102", "labels")
    keys = ("trnid", "valid", "tstid")
    sets = dict(zip(keys, _loadmat(folder / "setid.mat", "flowers102", *keys)))
    labels = labels.tolist()
    splits = {split: [(folder / "jpg" / f"image_{i:05d}.jpg", labels[i - 1] - 1) for i in sets[key].tolist()]
              for split, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid"))}
    return Layout(splits, None, folder / "imagelabels.mat")


def read_fgvc_aircraft(folder: Path, allow_outside: bool) -> Layout:
    """data/variants.txt (the 100 classes in order), data/images_variant_{split}.txt ('1025794 707-320'); CoOp
    reads the same files from a folder holding data/'s contents."""
    data = folder / "data" if (folder / "data" / "variants.txt").is_file() else folder
    variants = _names(data / "variants.txt", "fgvc_aircraft")
    index = {v: i for i, v in enumerate(variants)}
    splits = {}
    for split in ("train", "val", "test"):
        path = data / f"images_variant_{split}.txt"
        if path.is_file():
            rows = _rows(path, "fgvc_aircraft", AircraftLine)
            unknown = sorted({r.variant.strip() for r in rows if r.variant.strip() not in index})
            if unknown:
                raise fuse.DataError(f"fgvc_aircraft: {path} names variants not in {data / 'variants.txt'}, e.g. "
                                     f"{unknown[0]}; use the files as distributed.")
            splits[split] = [(_inside(data / "images", f"{r.image}.jpg", path, "image", "fgvc_aircraft", allow_outside),
                              index[r.variant.strip()]) for r in rows]
    return Layout(splits, len(variants), data / "variants.txt")


def read_sun397(folder: Path, allow_outside: bool) -> Layout:
    """ClassName.txt ('/a/abbey', in class order) and <letter>/<class>/sun_*.jpg (found, not named by a file)."""
    classes = [c[3:] for c in _names(folder / "ClassName.txt", "sun397")]
    index = {c: i for i, c in enumerate(classes)}
    items = []
    for path in sorted(folder.rglob("sun_*.jpg")):
        key = "/".join(path.relative_to(folder).parts[1:-1])
        if key not in index:
            raise fuse.DataError(f"sun397: {path} is in a class folder ClassName.txt does not list ({key}); use the "
                                 "files as distributed.")
        items.append((path, index[key]))
    return Layout({"all": items}, len(classes), folder / "ClassName.txt")


def read_dtd(folder: Path, allow_outside: bool) -> Layout:
    """labels/{train,val,test}1.txt ('banded/banded_0002.jpg', partition 1) and images/<class>/; classes sorted."""
    base = folder / "images"
    classes = _folders(base)
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for split in ("train", "val", "test"):
        path = folder / "labels" / f"{split}1.txt"
        if path.is_file():
            paths = [_inside(base, r.path, path, "path", "dtd", allow_outside)
                     for r in _rows(path, "dtd", DtdLine)]
            splits[split] = [(p, index[p.relative_to(base.resolve()).parts[0]]) for p in paths
                             if p.is_relative_to(base.resolve()) and p.relative_to(base.resolve()).parts[0] in index]
    return Layout(splits, len(classes), base)


def read_eurosat(folder: Path, allow_outside: bool) -> Layout:
    """2750/<Class>/<Class>_N.jpg (the RGB version), classes sorted (folder and file names only)."""
    base = folder / "2750"
    classes = _folders(base)
    items = [(p, i) for i, c in enumerate(classes) for p in sorted((base / c).iterdir())
             if p.suffix.lower() in IMAGE_EXT]
    return Layout({"all": items}, len(classes), base)
