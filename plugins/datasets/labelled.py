"""Labelled sets for zero-shot and probes: ImageNet-1k validation and any class-per-folder tree.

Records hold ``label`` (unique per class: a WordNet id, a folder name); ``classes.tsv`` beside the
manifests gives each label the name prompts use (for ImageNet the curated names CLIP and open_clip
evaluate with, which repeat two names, so labels cannot be the names)."""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path
from typing import Literal

import pydantic

import fuse

from .layout import (AUDIO_EXT, IMAGE_EXT, VIDEO_EXT, Missing, RootBuilder, RootOptions, class_names, interleave,
                     read_csv, root_dir, write_classes, write_splits)

SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "test": "test"}
WNID = re.compile(r"^n\d{8}$")
VAL_FOLDERS = ("val", "images/val", "ILSVRC/Data/CLS-LOC/val")


class SolutionRow(fuse.foreign.Record):
    """A row of Kaggle's LOC_val_solution.csv: the image and its boxes, the first word a WordNet id."""

    ImageId: str
    PredictionString: str = pydantic.Field(pattern=r"^n\d{8}\b")


def _devkit_labels(root: Path) -> dict[str, str] | None:
    """Image stem -> WordNet id from the ILSVRC2012 devkit (a folder or the .tar.gz): meta.mat maps the
    ground-truth file's ILSVRC2012_IDs to WordNet ids, as torchvision's parser does."""
    folder = root / "ILSVRC2012_devkit_t12" / "data"
    archive = root / "ILSVRC2012_devkit_t12.tar.gz"
    if (folder / "meta.mat").is_file():
        meta = (folder / "meta.mat").read_bytes()
        truth = fuse.foreign.read_text(folder / "ILSVRC2012_validation_ground_truth.txt", "imagenet")
    elif archive.is_file():
        with tarfile.open(archive) as tar:
            read = {Path(m.name).name: m for m in tar if m.isfile()}
            meta = tar.extractfile(read["meta.mat"]).read()
            truth = tar.extractfile(read["ILSVRC2012_validation_ground_truth.txt"]).read().decode("utf-8", "replace")
    else:
        return None
    try:
        from scipy.io import loadmat
    except ImportError:
        raise fuse.DataError("imagenet: reading the devkit's meta.mat needs scipy: pip install "
                             "'fuse-align[datasets]'.") from None
    synsets = loadmat(io.BytesIO(meta), squeeze_me=True)["synsets"]
    id_to_wnid = {int(s[0]): str(s[1]) for s in synsets if int(s[4]) == 0}   # leaves: the 1,000 classes
    if not all(word.isdigit() for word in truth.split()):
        raise fuse.DataError("imagenet: the devkit's ILSVRC2012_validation_ground_truth.txt holds a line that is not "
                             "a class id; use the devkit as distributed.")
    ids = [int(line) for line in truth.split()]
    return {f"ILSVRC2012_val_{n:08d}": id_to_wnid[i] for n, i in enumerate(ids, start=1)}


def _solution_labels(root: Path) -> dict[str, str] | None:
    """Image stem -> WordNet id from Kaggle's LOC_val_solution.csv (first word of PredictionString)."""
    path = root / "LOC_val_solution.csv"
    if not path.is_file():
        return None
    return {r.ImageId: r.PredictionString.split()[0] for r in read_csv(path, "imagenet", SolutionRow)}


class ImageNet(RootBuilder):
    """ImageNet-1k validation (50k images): val/<wnid>/ folders (or CoOp's images/val/), or a flat val/ with the
    devkit, or Kaggle's ILSVRC/Data/CLS-LOC/val/ with its LOC_val_solution.csv."""

    modalities = ("image",)
    Options = RootOptions
    foreign_files = (fuse.ForeignFile("LOC_val_solution.csv", "csv", SolutionRow),)

    def build(self, out_dir: Path) -> dict[str, Path]:
        opts = self.options
        root = root_dir(opts, "imagenet")
        wnids, names = class_names("imagenet_synsets"), class_names("imagenet")
        known = set(wnids)
        # ILSVRC2012's val/, CoOp's images/val/, Kaggle's ILSVRC/Data/CLS-LOC/val/ (its csv at the top), or the root
        val = next((root / v for v in VAL_FOLDERS if (root / v).is_dir()), root)
        folders = [d for d in sorted(val.iterdir()) if d.is_dir() and WNID.match(d.name)]
        records = []
        if folders:
            unknown = [d.name for d in folders if d.name not in known]
            if unknown:
                raise fuse.DataError(f"imagenet: {len(unknown)} folder(s) in {val} are not ImageNet-1k classes, e.g. "
                                     f"{', '.join(unknown[:5])}. Point --root at the ILSVRC2012 val folder.")
            for d in folders:
                records += [{"id": p.stem, "image": str(p), "label": d.name}
                            for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_EXT]
        else:
            labels = _devkit_labels(root) or _solution_labels(root)
            if labels is None:
                raise fuse.DataError(f"imagenet: {val} has no class folders (n01440764/ ...), and no "
                                     "ILSVRC2012_devkit_t12(.tar.gz) or LOC_val_solution.csv beside it labels a flat "
                                     "val folder. Give one of the two layouts.")
            bad = sorted({w for w in labels.values() if w not in known})
            if bad:
                raise fuse.DataError(f"imagenet: the ground truth names {len(bad)} WordNet id(s) outside ImageNet-1k, "
                                     f"e.g. {bad[0]}; is it the ILSVRC2012 devkit?")
            files = {p.stem: p for p in val.iterdir() if p.suffix.lower() in IMAGE_EXT}
            missing = Missing("imagenet", opts.on_missing, val)
            for stem, wnid in sorted(labels.items()):
                if missing.check(files.get(stem), stem):
                    records.append({"id": stem, "image": str(files[stem]), "label": wnid})
            missing.finish(out_dir)
        write_classes(out_dir, wnids, names)
        return write_splits(out_dir, {"val": interleave(records)}, opts.limit, "imagenet")


def _class_files(folder: Path) -> list[Path]:
    """Every file under a class folder, sorted; a folder that cannot be read is one line, not a class that
    silently shrinks or vanishes."""
    def refuse(exc: OSError):
        raise fuse.DataError(f"folder: cannot read {exc.filename} ({exc.strerror}); fix its permissions or move it "
                             "out of the root.")

    return sorted(Path(top) / f for top, _, files in os.walk(folder, onerror=refuse) for f in files)


class FolderOptions(RootOptions):
    modality: Literal["auto", "image", "audio", "video"] = pydantic.Field(
        "auto", description="What the files are (auto: from their extensions); also the manifests' key.")


class ClassFolders(RootBuilder):
    """Any labelled set held as ROOT/<class>/<file> (one split, 'all') or ROOT/<split>/<class>/<file>."""

    modalities = ("image",)
    Options = FolderOptions
    foreign_files = ()   # reads folder and file names only

    def build(self, out_dir: Path) -> dict[str, Path]:
        opts = self.options
        root = root_dir(opts, "folder")
        top = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        if top and all(d.name in SPLIT_NAMES for d in top):
            trees = {SPLIT_NAMES[d.name]: d for d in top}
        else:
            trees = {"all": root}
        exts = {"image": IMAGE_EXT, "audio": AUDIO_EXT, "video": VIDEO_EXT}
        splits, classes = {}, set()
        for split, tree in trees.items():
            splits[split] = []
            for d in sorted(p for p in tree.iterdir() if p.is_dir() and not p.name.startswith(".")):
                classes.add(d.name)
                for path in _class_files(d):
                    kind = next((k for k, e in exts.items() if path.suffix.lower() in e), None)
                    if kind is None or (opts.modality != "auto" and kind != opts.modality):
                        continue
                    splits[split].append({"id": f"{d.name}/{path.stem}", kind: str(path), "label": d.name})
        kinds = {k for records in splits.values() for r in records for k in r if k in exts}
        if not classes or not kinds:
            raise fuse.DataError(f"folder: {root} holds no class folders with image, audio or video files; lay it out "
                                 "as ROOT/<class>/<file> or ROOT/<split>/<class>/<file>.")
        if len(kinds) > 1:
            raise fuse.DataError(f"folder: {root} mixes {' and '.join(sorted(kinds))} files; pass --modality to "
                                 "pick one.")
        labels = sorted(classes)
        splits = {s: interleave(r) for s, r in splits.items()}
        write_classes(out_dir, labels, [c.replace("_", " ") for c in labels])
        return write_splits(out_dir, splits, opts.limit, "folder")
