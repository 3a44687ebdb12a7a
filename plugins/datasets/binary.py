"""CIFAR-10, CIFAR-100 and STL-10 from their binary versions (fixed-size byte records, read with numpy).

Their "python versions" are pickles, which fuse never loads: a root holding one gets one line naming the
binary archive to fetch instead. The images are written as PNGs into the build folder (the test split; the
train split with ``--train``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydantic

import fuse

from .layout import RootBuilder, RootOptions, class_names, interleave, root_dir, write_classes, write_splits
from .suite import set_templates
from .tvlayouts import Name


@dataclass(frozen=True)
class BinarySet:
    name: str
    folder: str                          # the archive's folder
    names_file: str                      # its class-name list
    splits: dict[str, tuple[str, ...]]   # split -> record files (STL-10: the X file; its y file beside it)
    label_byte: int                      # which leading byte is the label (CIFAR-100: 1, the fine label)
    head: int                            # leading label bytes per record
    side: int                            # image side in pixels
    python_folder: str | None            # the pickle version's folder, refused
    archive: str                         # what to download instead


SETS = {s.name: s for s in (
    BinarySet("cifar10", "cifar-10-batches-bin", "batches.meta.txt",
              {"train": tuple(f"data_batch_{n}.bin" for n in range(1, 6)), "test": ("test_batch.bin",)}, 0, 1, 32,
              "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"),
    BinarySet("cifar100", "cifar-100-binary", "fine_label_names.txt", {"train": ("train.bin",), "test": ("test.bin",)},
              1, 2, 32, "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"),
    BinarySet("stl10", "stl10_binary", "class_names.txt", {"train": ("train_X.bin",), "test": ("test_X.bin",)},
              0, 0, 96, None, "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"),
)}


class BinaryOptions(RootOptions):
    train: bool = pydantic.Field(False, description="Also decode the training images (the benchmark needs only test).")


def _folder(spec: BinarySet, root: Path) -> Path:
    for folder in (root, root / spec.folder):
        if (folder / spec.names_file).is_file():
            return folder
    if spec.python_folder and any((f / spec.python_folder).is_dir() or f.name == spec.python_folder
                                  for f in (root, root.parent)):
        raise fuse.DataError(f"{spec.name}: {root} holds the python version ({spec.python_folder}, pickles, which fuse "
                             f"never loads); download the binary version {spec.archive} and point --root at its "
                             f"{spec.folder} folder.")
    raise fuse.DataError(f"{spec.name}: no {spec.folder}/{spec.names_file} under {root}; unpack {spec.archive} and "
                         "point --root at it.")


def _records(spec: BinarySet, folder: Path, files: tuple[str, ...]):
    """(images [N, side, side, 3] uint8, labels from 0) of a split's record files."""
    import numpy as np

    pixels = 3 * spec.side * spec.side
    images, labels = [], []
    for name in files:
        path = folder / name
        if not path.is_file():
            raise fuse.DataError(f"{spec.name}: {path} not found; unpack {spec.archive} whole.")
        raw = np.frombuffer(fuse.foreign.read_bytes(path, spec.name), dtype=np.uint8)
        if spec.head == 0:   # STL-10: X holds the pixels (column-major), y the labels from 1
            y_path = path.with_name(name.replace("_X", "_y"))
            if raw.size % pixels or not y_path.is_file():
                raise fuse.DataError(f"{spec.name}: {path} is not STL-10's binary file (or {y_path.name} is missing).")
            images.append(raw.reshape(-1, 3, spec.side, spec.side).transpose(0, 3, 2, 1))
            labels.append(np.frombuffer(fuse.foreign.read_bytes(y_path, spec.name), dtype=np.uint8).astype(int) - 1)
            continue
        if raw.size % (pixels + spec.head):
            raise fuse.DataError(f"{spec.name}: {path} is {raw.size} bytes, not a whole number of "
                                 f"{pixels + spec.head}-byte records; use the file as distributed.")
        rows = raw.reshape(-1, pixels + spec.head)
        labels.append(rows[:, spec.label_byte].astype(int))
        images.append(rows[:, spec.head:].reshape(-1, 3, spec.side, spec.side).transpose(0, 2, 3, 1))
    return np.concatenate(images), np.concatenate(labels)


class BinaryBuilder(RootBuilder):
    """One of CIFAR-10, CIFAR-100, STL-10 (``spec``) from its binary archive."""

    modalities = ("image",)
    Options = BinaryOptions
    spec: BinarySet   # builders() declares foreign_files: the class-name list (the .bin files are byte records)

    def build(self, out_dir: Path) -> dict[str, Path]:
        from PIL import Image

        spec, opts = self.spec, self.options
        folder = _folder(spec, root_dir(opts, spec.name))
        names = class_names(spec.name)
        listed = fuse.foreign.read_rows(folder / spec.names_file, Name, spec.name)
        if len(listed) != len(names):
            raise fuse.DataError(f"{spec.name}: {folder / spec.names_file} lists {len(listed)} classes but {spec.name} "
                                 f"has {len(names)}; use the file as distributed.")
        splits = {}
        for split in ("train", "test") if opts.train else ("test",):
            images, labels = _records(spec, folder, spec.splits[split])
            if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
                raise fuse.DataError(f"{spec.name}: {folder} holds labels outside 0..{len(names) - 1}; use the files "
                                     "as distributed.")
            (out_dir / split).mkdir()
            splits[split] = []
            for n, (pixels, label) in enumerate(zip(images, labels.tolist())):
                Image.fromarray(pixels).save(out_dir / split / f"{n:05d}.png")
                # relative to the manifest: the build folder is renamed when published
                splits[split].append({"id": f"{split}/{n}", "image": f"{split}/{n:05d}.png", "label": str(label)})
            splits[split] = interleave(splits[split])
        write_classes(out_dir, [str(i) for i in range(len(names))], names)
        (out_dir / "templates.txt").write_text(set_templates(spec.name), encoding="utf-8")
        return write_splits(out_dir, splits, opts.limit, spec.name)


def builders() -> dict[str, type[BinaryBuilder]]:
    return {name: type(f"Binary_{name}", (BinaryBuilder,), {
        "spec": spec, "__doc__": f"{name} from its binary version ({spec.folder}), for zero-shot.",
        "foreign_files": (fuse.ForeignFile(f"**/{spec.names_file}", "lines", Name),)}) for name, spec in SETS.items()}
