"""The zero-shot suite's sets in their exact on-disk layouts, with tiny real images: torchvision's folders
(what ``torchvision.datasets.X(root)`` reads), CoOp's ``split_zhou_*.json`` folders, ImageNet's variants and the
binary CIFAR/STL-10 archives. Every class has at least one test image, so class counts are checkable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from fuse.plugins.datasets.layout import class_names

DTD = ("banded blotchy braided bubbly bumpy chequered cobwebbed cracked crosshatched crystalline dotted fibrous "
       "flecked freckled frilly gauzy grid grooved honeycombed interlaced knitted lacelike lined marbled matted meshed "
       "paisley perforated pitted pleated polka-dotted porous potholed scaly smeared spiralled sprinkled stained "
       "stratified striped studded swirly veined waffled woven wrinkled zigzagged").split()
EUROSAT = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
           "Residential", "River", "SeaLake"]


def jpg(path: Path, i: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)).save(path)
    return path


def keys(name: str) -> list[str]:
    """The set's class keys as its files spell them (underscores for spaces)."""
    return [n.replace(" ", "_").replace("/", "_") for n in class_names(name)]


def food101(root: Path) -> Path:
    base, classes = root / "food-101", sorted(keys("food101"))
    meta = {"train": {c: [f"{c}/{100 + i}"] for i, c in enumerate(classes[:3])},
            "test": {c: [f"{c}/{i}", f"{c}/{500 + i}"][:1 + (i % 2)] for i, c in enumerate(classes)}}
    for split, entries in meta.items():
        (base / "meta").mkdir(parents=True, exist_ok=True)
        (base / "meta" / f"{split}.json").write_text(json.dumps(entries))
        for n, rel in enumerate(r for rels in entries.values() for r in rels):
            jpg(base / "images" / f"{rel}.jpg", n)
    (base / "meta" / "classes.txt").write_text("\n".join(classes) + "\n")
    return root


def oxford_pets(root: Path) -> Path:
    base = root / "oxford-iiit-pet"
    breeds = keys("oxford_pets")
    (base / "annotations").mkdir(parents=True)
    for split, per in (("trainval", 1), ("test", 2)):
        lines = []
        for c, breed in enumerate(breeds):
            for k in range(per):
                image_id = f"{breed}_{split}{k}"
                jpg(base / "images" / f"{image_id}.jpg", c)
                lines.append(f"{image_id} {c + 1} {1 + (c % 2)} {c // 2 + 1}")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def flowers102(root: Path) -> Path:
    from scipy.io import savemat

    base = root / "flowers-102"
    labels = [1 + (i % 102) for i in range(204)]        # image i+1 has class labels[i] (from 1)
    for i in range(len(labels)):
        jpg(base / "jpg" / f"image_{i + 1:05d}.jpg", labels[i])
    savemat(base / "imagelabels.mat", {"labels": np.array([labels])})
    ids = np.arange(1, 205)
    savemat(base / "setid.mat", {"trnid": ids[ids % 3 == 0][None], "valid": ids[ids % 3 == 1][None],
                                 "tstid": ids[ids % 3 == 2][None]})
    return root


def dtd(root: Path) -> Path:
    base = root / "dtd" / "dtd"
    (base / "labels").mkdir(parents=True)
    for s, split in enumerate(("train", "val", "test")):
        rels = [f"{c}/{c}_{s:04d}.jpg" for c in DTD]
        for n, rel in enumerate(rels):
            jpg(base / "images" / rel, n)
        (base / "labels" / f"{split}1.txt").write_text("\n".join(reversed(rels)) + "\n")
    return root


def fgvc_aircraft(root: Path) -> Path:
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = class_names("fgvc_aircraft")
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    for s, split in enumerate(("train", "val", "test")):
        lines = []
        for c, v in enumerate(variants):
            ident = f"{s}{c:06d}"
            jpg(data / "images" / f"{ident}.jpg", c)
            lines.append(f"{ident} {v}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def stanford_cars(root: Path) -> Path:
    from scipy.io import savemat

    base = root / "stanford_cars"
    names = class_names("stanford_cars")
    (base / "devkit").mkdir(parents=True)
    savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([names], dtype=object)})
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    for annos, images in ((base / "devkit" / "cars_train_annos.mat", "cars_train"),
                          (base / "cars_test_annos_withlabels.mat", "cars_test")):
        rows = np.zeros((1, len(names)), dtype=[(f, "O") for f in fields])
        for c in range(len(names)):
            fname = f"{(c * 7) % len(names) + 1:05d}.jpg"
            jpg(base / images / fname, c)
            for f, v in zip(fields, (1, 1, 7, 7, c + 1, fname)):
                rows[0, c][f] = v
        savemat(annos, {"annotations": rows})
    return root


def sun397(root: Path) -> Path:
    base = root / "SUN397"
    classes = [f"/{chr(97 + i % 26)}/class{i:03d}" + ("/indoor" if i % 50 == 0 else "") for i in range(397)]
    base.mkdir(parents=True)
    (base / "ClassName.txt").write_text("\n".join(classes) + "\n")
    for i, c in enumerate(classes):
        jpg(base / c.lstrip("/") / f"sun_{i:05d}.jpg", i)
    return root


def eurosat(root: Path) -> Path:
    for c, name in enumerate(EUROSAT):
        for k in range(2):
            jpg(root / "eurosat" / "2750" / name / f"{name}_{k + 1}.jpg", c)
    return root


def caltech101(root: Path, coop: bool = False) -> Path:
    """101_ObjectCategories with BACKGROUND_Google, Faces, Faces_easy, Leopards, Motorbikes and 97 more; under
    caltech101/ (torchvision) or caltech-101/ with CoOp's split file (which leaves out the first and Faces_easy)."""
    base = root / ("caltech-101" if coop else "caltech101")
    folders = ["BACKGROUND_Google", "Faces", "Faces_easy", "Leopards", "Motorbikes"] + [f"obj{i:02d}" for i in range(97)]
    for c, folder in enumerate(folders):
        for k in range(2):
            jpg(base / "101_ObjectCategories" / folder / f"image_{k + 1:04d}.jpg", c)
    if coop:
        kept = [f for f in folders if f not in ("BACKGROUND_Google", "Faces_easy")]
        items = [[f"{f}/image_0001.jpg", label, f.lower()] for label, f in enumerate(kept)]
        write_split(base / "split_zhou_Caltech101.json", items[:5], items[:3], items)
    return root


def write_split(path: Path, train: list, val: list, test: list) -> None:
    """CoOp's split_zhou_*.json exactly as its save_split writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"train": train, "val": val, "test": test}, indent=4, separators=(",", ": ")))


def coop(root: Path, folder: str, split_file: str, images: str, name: str, per_class: int = 1) -> Path:
    """A CoOp folder for any set: ``images``/<class>/<n>.jpg and the split file labelling them 0..N-1."""
    base, items = root / folder, []
    for label, key in enumerate(keys(name)):
        for k in range(per_class):
            rel = f"{key}/{key}_{k}.jpg"
            jpg(base / images / rel, label)
            items.append([rel, label, key.lower()])
    write_split(base / split_file, items[::3], items[1::3], items)
    return root


def imagenet_variant(root: Path, folder: str, wnids: list[str], by_index: bool = False) -> Path:
    synsets = class_names("imagenet_synsets")
    for i, w in enumerate(wnids):
        name = str(synsets.index(w)) if by_index else w
        jpg(root / folder / name / f"{i}.jpeg", i)
    if folder.endswith(("imagenet-a", "imagenet-r")):
        (root / folder / "README.txt").write_text("200 classes\n")
    return root


def cifar_arrays(n: int, classes: int, side: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8), np.arange(n) % classes


def cifar10_binary(root: Path, images, labels) -> Path:
    base = root / "cifar-10-batches-bin"
    base.mkdir(parents=True)
    record = np.concatenate([labels[:, None].astype(np.uint8), images.transpose(0, 3, 1, 2).reshape(len(labels), -1)], 1)
    for name in [f"data_batch_{n}.bin" for n in range(1, 6)] + ["test_batch.bin"]:
        (base / name).write_bytes(record.tobytes())
    (base / "batches.meta.txt").write_text("\n".join(class_names("cifar10")) + "\n\n")
    return root


def cifar100_binary(root: Path, images, labels) -> Path:
    base = root / "cifar-100-binary"
    base.mkdir(parents=True)
    coarse = (labels // 5).astype(np.uint8)
    record = np.concatenate([coarse[:, None], labels[:, None].astype(np.uint8),
                             images.transpose(0, 3, 1, 2).reshape(len(labels), -1)], 1)
    for name in ("train.bin", "test.bin"):
        (base / name).write_bytes(record.tobytes())
    (base / "fine_label_names.txt").write_text("\n".join(n.replace(" ", "_") for n in class_names("cifar100")) + "\n")
    (base / "coarse_label_names.txt").write_text("\n".join(f"super{i}" for i in range(20)) + "\n")
    return root


def stl10_binary(root: Path, images, labels) -> Path:
    """X: N x 3 x 96 x 96 in column-major order per channel (as the archive stores it); y: labels from 1."""
    base = root / "stl10_binary"
    base.mkdir(parents=True)
    for split in ("train", "test"):
        (base / f"{split}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())
        (base / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
    (base / "class_names.txt").write_text("\n".join(class_names("stl10")) + "\n")
    (base / "unlabeled_X.bin").write_bytes(b"")
    return root
