"""Image-caption sets: COCO (Karpathy's ``dataset_coco.json`` or the 2017 ``captions_*.json``) and
Flickr30K (Karpathy's ``dataset_flickr30k.json``). One record per image with all its captions, so
retrieval scores every image against all of its (about five) captions, as the papers do."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import pydantic

import fuse

from .layout import (IMAGE_EXT, Missing, RootBuilder, RootOptions, find_file, index_media, read_json, root_dir,
                     write_splits)

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "val", "test": "test"}
COCO_ID = re.compile(r"(\d{6,12})$")   # COCO_val2014_000000391895 and 000000391895 both end in the id


class Sentence(fuse.foreign.Record):
    raw: str


class KarpathyImage(fuse.foreign.Record):
    """An image of Karpathy's dataset_{coco,flickr30k}.json."""

    filename: str
    split: Literal["train", "restval", "val", "test"]
    sentences: list[Sentence]


class KarpathyCocoImage(KarpathyImage):
    cocoid: int   # COCO's image id: how the image file is found


class CocoImage(fuse.foreign.Record):
    """An image of captions_{train,val}2017.json."""

    id: int
    file_name: str


class CocoCaption(fuse.foreign.Record):
    """An annotation of captions_{train,val}2017.json."""

    image_id: int
    caption: str


def karpathy_images(path: Path, dataset: str, schema: type[KarpathyImage]) -> list[KarpathyImage]:
    """The ``images`` of a Karpathy split file, checked to be the named dataset's."""
    data = read_json(path, dataset)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise fuse.DataError(f"{dataset}: {path} has no 'images' list; it is not a Karpathy split file "
                             f"(dataset_{dataset}.json).")
    if data.get("dataset") != dataset:
        raise fuse.DataError(f"{dataset}: {path} is Karpathy's split of '{data.get('dataset')}', not {dataset}. "
                             f"Use dataset_{dataset}.json.")
    return fuse.foreign.validate_all(schema, data["images"], path, "images", dataset)


def karpathy_records(images: list[KarpathyImage], locate, missing: Missing, restval: bool) -> dict[str, list[dict]]:
    """Records per split: train (+ restval unless kept apart), val, test; captions are the raw sentences."""
    splits: dict[str, list[dict]] = {"train": [], "restval": [], "val": [], "test": []}
    for image in images:
        path = locate(image)
        if not missing.check(path, image.filename):
            continue
        ident = str(getattr(image, "cocoid", Path(image.filename).stem))
        record = {"id": ident, "image": str(path), "text": [s.raw.strip() for s in image.sentences]}
        splits["train" if image.split == "restval" and restval else image.split].append(record)
    return splits


class CocoOptions(RootOptions):
    annotations: Literal["auto", "karpathy", "2017"] = pydantic.Field(
        "auto", description="karpathy: dataset_coco.json (train/restval/val/test, the papers' 5k test); 2017: "
                            "annotations/captions_{train,val}2017.json; auto: karpathy if its file is there.")
    restval: bool = pydantic.Field(True, description="Karpathy: fold the 30k restval images into train (113k), "
                                                     "as the papers do; false keeps a restval split.")


class Coco(RootBuilder):
    """COCO captions from a local root: Karpathy splits (5k test) or the 2017 train/val split."""

    modalities = ("image", "text")
    Options = CocoOptions
    foreign_files = (fuse.ForeignFile("dataset_coco.json", "json", KarpathyCocoImage, "images"),
                     fuse.ForeignFile("annotations/captions_*2017.json", "json", CocoImage, "images"),
                     fuse.ForeignFile("annotations/captions_*2017.json", "json", CocoCaption, "annotations"))

    def build(self, out_dir: Path) -> dict[str, Path]:
        opts = self.options
        root = root_dir(opts, "coco")
        karpathy = ["dataset_coco.json", "annotations/dataset_coco.json", "karpathy/dataset_coco.json"]
        use = opts.annotations
        if use == "auto":
            use = "karpathy" if any((root / n).is_file() for n in karpathy) else "2017"
            if use == "2017" and not any((root / "annotations" / f"captions_{s}2017.json").is_file()
                                         for s in ("train", "val")):
                raise fuse.DataError(f"coco: {root} holds neither dataset_coco.json (Karpathy's splits) nor "
                                     "annotations/captions_{train,val}2017.json; point --root at your COCO folder.")
        by_id = {int(m[1]): p for stem, p in index_media(root, IMAGE_EXT).items() if (m := COCO_ID.search(stem))}
        missing = Missing("coco", opts.on_missing, root)
        if use == "karpathy":
            path = find_file(root, karpathy, "coco", "Karpathy's split file",
                             "Put dataset_coco.json in the root, or pass --annotations 2017.")
            splits = karpathy_records(karpathy_images(path, "coco", KarpathyCocoImage),
                                      lambda im: by_id.get(im.cocoid), missing, opts.restval)
        else:
            # either file alone is a usable root (val2017 alone is what many hold for evaluation)
            present = [s for s in ("train", "val") if (root / "annotations" / f"captions_{s}2017.json").is_file()]
            splits = {s: self._coco2017(root, s, by_id, missing) for s in present or ["val"]}
        missing.finish(out_dir)
        return write_splits(out_dir, splits, opts.limit, "coco")

    @staticmethod
    def _coco2017(root: Path, split: str, by_id: dict[int, Path], missing: Missing) -> list[dict]:
        """One record per image of captions_{split}2017.json, its captions in annotation order."""
        path = find_file(root, [f"annotations/captions_{split}2017.json"], "coco", f"the {split} captions",
                         "Unpack annotations_trainval2017.zip into the root, or give --annotations karpathy.")
        data = read_json(path, "coco")
        if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
            raise fuse.DataError(f"coco: {path} has no 'images' and 'annotations'; it is not a COCO captions file.")
        first = data["annotations"][0] if isinstance(data["annotations"], list) and data["annotations"] else {}
        if isinstance(first, dict) and first and "caption" not in first:
            raise fuse.DataError(f"coco: {path} holds annotations without 'caption' (instances or keypoints?); use "
                                 f"captions_{split}2017.json.")
        captions: dict[int, list[str]] = {}
        for ann in fuse.foreign.validate_all(CocoCaption, data["annotations"], path, "annotations", "coco"):
            captions.setdefault(ann.image_id, []).append(ann.caption.strip())
        records = []
        images = fuse.foreign.validate_all(CocoImage, data["images"], path, "images", "coco")
        for image in sorted(images, key=lambda im: im.id):
            if image.id not in captions or not missing.check(by_id.get(image.id), image.file_name):
                continue
            records.append({"id": str(image.id), "image": str(by_id[image.id]), "text": captions[image.id]})
        return records


class Flickr30k(RootBuilder):
    """Flickr30K from a local root with Karpathy's dataset_flickr30k.json (29k/1k/1k images, five captions each)."""

    modalities = ("image", "text")
    Options = RootOptions
    foreign_files = (fuse.ForeignFile("dataset_flickr30k.json", "json", KarpathyImage, "images"),)

    def build(self, out_dir: Path) -> dict[str, Path]:
        opts = self.options
        root = root_dir(opts, "flickr30k")
        path = find_file(root, ["dataset_flickr30k.json", "annotations/dataset_flickr30k.json",
                                "karpathy/dataset_flickr30k.json"], "flickr30k", "Karpathy's split file",
                         "Put dataset_flickr30k.json in the root.")
        media = index_media(root, IMAGE_EXT)
        missing = Missing("flickr30k", opts.on_missing, root)
        splits = karpathy_records(karpathy_images(path, "flickr30k", KarpathyImage), lambda im: media.get(Path(im.filename).stem),
                                  missing, True)
        missing.finish(out_dir)
        return write_splits(out_dir, splits, opts.limit, "flickr30k")
