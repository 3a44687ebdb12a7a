"""ImageNet's distribution-shift test sets, scored with ImageNet's class names and CLIP's 80 templates:
ImageNet-V2 (folders ``0`` ... ``999``, ImageNet's class indices), ImageNet-Sketch (1,000 WordNet-id folders),
ImageNet-A and ImageNet-R (200 WordNet-id folders each: zero-shot chooses among those 200 classes, named as
in ImageNet; the lists are shipped in ``classes/imagenet_{a,r}_wnids.txt``, copied from clip_benchmark)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import fuse

from .layout import (IMAGE_EXT, RootBuilder, RootOptions, class_names, interleave, root_dir, write_classes,
                     write_splits)

WNID = re.compile(r"^n\d{8}$")
INDEX = re.compile(r"^\d{1,3}$")


@dataclass(frozen=True)
class Variant:
    name: str
    folders: tuple[str, ...]   # where the class folders are, under --root ("" is the root itself)
    by_index: bool             # class folders named by ImageNet index (V2) instead of WordNet id
    subset: str | None         # shipped WordNet-id list of a 200-class subset


VARIANTS = {v.name: v for v in (
    Variant("imagenet_v2", ("imagenetv2-matched-frequency-format-val", "imagenetv2-threshold0.7-format-val",
                            "imagenetv2-top-images-format-val", ""), True, None),
    Variant("imagenet_sketch", ("sketch", "images", ""), False, None),
    Variant("imagenet_a", ("imagenet-a", ""), False, "imagenet_a_wnids"),
    Variant("imagenet_r", ("imagenet-r", ""), False, "imagenet_r_wnids"),
)}


def _class_folders(spec: Variant, root: Path) -> list[Path]:
    pattern = INDEX if spec.by_index else WNID
    for name in spec.folders:
        folder = root / name
        found = [d for d in sorted(folder.iterdir()) if d.is_dir() and pattern.match(d.name)] if folder.is_dir() else []
        if found:
            return found
    kind = "0/ ... 999/ (ImageNet class indices)" if spec.by_index else "n01440764/ ... (WordNet ids)"
    raise fuse.DataError(f"{spec.name}: no class folders {kind} in {root} or its "
                         f"{', '.join(n + '/' for n in spec.folders if n)}; point --root at the unpacked archive.")


class VariantBuilder(RootBuilder):
    """One ImageNet variant (``spec``): its class folders, labelled by WordNet id."""

    modalities = ("image",)
    Options = RootOptions
    foreign_files = ()   # reads folder and file names only (the class lists are shipped with fuse)
    spec: Variant

    def build(self, out_dir: Path) -> dict[str, Path]:
        spec, opts = self.spec, self.options
        root = root_dir(opts, spec.name)
        wnids, names = class_names("imagenet_synsets"), class_names("imagenet")
        keep = set(class_names(spec.subset)) if spec.subset else set(wnids)
        folders = _class_folders(spec, root)
        records = []
        for d in folders:
            wnid = wnids[int(d.name)] if spec.by_index and int(d.name) < len(wnids) else d.name
            if wnid not in keep:
                raise fuse.DataError(f"{spec.name}: {d} is not one of its {len(keep)} classes; point --root at the "
                                     f"{spec.name} folder as distributed.")
            records += [{"id": f"{d.name}/{p.stem}", "image": str(p), "label": wnid}
                        for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_EXT]
        order = [i for i, w in enumerate(wnids) if w in keep]   # ImageNet's class order, kept classes only
        write_classes(out_dir, [wnids[i] for i in order], [names[i] for i in order])
        return write_splits(out_dir, {"test": interleave(records)}, opts.limit, spec.name)


def builders() -> dict[str, type[VariantBuilder]]:
    return {name: type(f"Variant_{name}", (VariantBuilder,), {"spec": spec, "__doc__":
            f"{name} ({len(class_names(spec.subset)) if spec.subset else 1000} classes), labelled by WordNet id."})
            for name, spec in VARIANTS.items()}
