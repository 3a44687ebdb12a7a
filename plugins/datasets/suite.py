"""The zero-shot classification suite the CLIP paper, CoOp and the frozen-encoder paper report, one table.

Each set is read from the layout its users hold: CoOp's ``split_zhou_*.json`` (what CoOp, CoCoOp and
Tip-Adapter read: ``{"train"|"val"|"test": [[relpath, label, classname], ...]}``, paths relative to the
set's image folder) or torchvision's on-disk layout (``tvlayouts``). Records hold the class index as their
label; ``classes.tsv`` gives each index the name CLIP's prompts use (shipped in ``classes/``: clip_benchmark's
list where it has one, else CLIP's ``data/prompts.md``), and ``templates.txt`` the set's CLIP templates, so
a benchmark needs nothing but the build."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pydantic

import fuse

from . import tvlayouts
from .layout import (Missing, RootBuilder, RootOptions, class_names, interleave, read_json, root_dir, write_classes,
                     write_splits)


@dataclass(frozen=True)
class SuiteSet:
    name: str
    classes: int                  # the set's class count as the CLIP paper scores it
    coop: tuple[str, str] | None  # CoOp's (split file, image folder) in the set's folder
    tv: str | None                # torchvision's folder name (the set's folder, or under the torchvision root)
    coop_drop: tuple[int, ...] = ()  # indices of the shipped names the CoOp split leaves out
    tv_drop: tuple[int, ...] = ()    # ... and torchvision's layout


SETS = {s.name: s for s in (
    SuiteSet("food101", 101, ("split_zhou_Food101.json", "images"), "food-101"),
    SuiteSet("oxford_pets", 37, ("split_zhou_OxfordPets.json", "images"), "oxford-iiit-pet"),
    # CLIP scores 102 classes (with 'background'); torchvision drops BACKGROUND_Google, CoOp also Faces_easy
    SuiteSet("caltech101", 102, ("split_zhou_Caltech101.json", "101_ObjectCategories"), "caltech101",
             coop_drop=(0, 2), tv_drop=(0,)),
    SuiteSet("stanford_cars", 196, ("split_zhou_StanfordCars.json", ""), "stanford_cars"),
    SuiteSet("flowers102", 102, ("split_zhou_OxfordFlowers.json", "jpg"), "flowers-102"),
    SuiteSet("fgvc_aircraft", 100, None, "fgvc-aircraft-2013b"),   # CoOp reads the set's own files
    SuiteSet("sun397", 397, ("split_zhou_SUN397.json", "SUN397"), "SUN397"),
    SuiteSet("dtd", 47, ("split_zhou_DescribableTextures.json", "images"), "dtd"),
    SuiteSet("eurosat", 10, ("split_zhou_EuroSAT.json", "2750"), "eurosat"),
    SuiteSet("ucf101", 101, ("split_zhou_UCF101.json", "UCF-101-midframes"), None),
)}


def set_templates(name: str) -> str:
    """The set's CLIP prompt templates, one per line with {} for the class name."""
    return resources.files(__package__).joinpath("templates", f"{name}.txt").read_text(encoding="utf-8")


class CoopItem(fuse.foreign.Record):
    """A row of CoOp's split_zhou_*.json, a list: [path relative to the set's image folder, label, class name]."""

    path: fuse.foreign.MediaPath
    label: int
    classname: str

    @pydantic.model_validator(mode="before")
    @classmethod
    def _row(cls, value):
        return dict(zip(cls.model_fields, value)) if isinstance(value, list) else value


SPLITS = ("train", "val", "test")


def read_coop(spec: SuiteSet, folder: Path, allow_outside: bool) -> tvlayouts.Layout:
    """Items of every split of CoOp's split file, labels as CoOp numbers them, paths inside the image folder."""
    split_file, images = spec.coop
    path = folder / split_file
    data = read_json(path, spec.name)
    missing = [s for s in SPLITS if not isinstance(data, dict) or s not in data]
    if missing:
        raise fuse.DataError(f"{spec.name}: {path} has no '{missing[0]}' list; CoOp's split file is "
                             "{\"train\"|\"val\"|\"test\": [[relpath, label, classname], ...]}.")
    base = folder / images
    splits = {s: [(fuse.foreign.inside(base, item.path, f"{path} {s}[{i}]", spec.name, allow_outside), item.label)
                  for i, item in enumerate(fuse.foreign.validate_all(CoopItem, data[s], path, s, spec.name))]
              for s in SPLITS}
    return tvlayouts.Layout(splits, None, path, coop=True)


def find_layout(spec: SuiteSet, root: Path, allow_outside: bool = False) -> tvlayouts.Layout:
    """CoOp's split file in the root (or the set's CoOp/torchvision folder under it), else torchvision's layout;
    neither is one line naming what each needs."""
    # the set's folder itself, or torchvision's root above it (DTD nests dtd/dtd/), or a folder named by the set
    folders = [root] + ([root / spec.tv, root / spec.tv / spec.tv] if spec.tv else []) + [root / spec.name]
    if spec.coop:
        for folder in folders:
            if (folder / spec.coop[0]).is_file():
                return read_coop(spec, folder, allow_outside)
    reader = getattr(tvlayouts, f"read_{spec.name}", None)
    if reader is not None:
        for folder in folders:
            if tvlayouts.holds(spec.name, folder):
                return reader(folder, allow_outside)
    coop = f"CoOp's {spec.coop[0]} beside {spec.coop[1] or 'the images'}/" if spec.coop else ""
    tv = f"torchvision's layout ({tvlayouts.MARKERS[spec.name]})" if reader else ""
    raise fuse.DataError(f"{spec.name}: {root} is in neither known layout; it needs {' or '.join(filter(None, [coop, tv]))}"
                         ". See docs/datasets-and-benchmarks.md.")


class SuiteBuilder(RootBuilder):
    """One set of the zero-shot suite (``spec``), in CoOp's layout or torchvision's."""

    modalities = ("image",)
    Options = RootOptions
    spec: SuiteSet

    def build(self, out_dir: Path) -> dict[str, Path]:
        spec, opts = self.spec, self.options
        root = root_dir(opts, spec.name)
        layout = find_layout(spec, root, opts.allow_outside_root)
        drop = spec.coop_drop if layout.coop else spec.tv_drop
        names = [n for i, n in enumerate(class_names(spec.name)) if i not in drop]
        labels = {label for items in layout.splits.values() for _, label in items}
        if layout.classes is not None and layout.classes != len(names):
            raise fuse.DataError(f"{spec.name}: {layout.source} lists {layout.classes} classes but {spec.name} has "
                                 f"{len(names)}; use the file as distributed.")
        if labels and (min(labels) < 0 or max(labels) >= len(names)):
            raise fuse.DataError(f"{spec.name}: {layout.source} has labels {min(labels)}..{max(labels)} but {spec.name} "
                                 f"has {len(names)} classes (0..{len(names) - 1}); use the file as distributed.")
        missing = Missing(spec.name, opts.on_missing, root)
        splits = {s: interleave([{"id": f"{s}/{n}", "image": str(p), "label": str(label)}
                                 for n, (p, label) in enumerate(items) if missing.check(p, str(p))])
                  for s, items in layout.splits.items()}
        missing.finish(out_dir)
        write_classes(out_dir, [str(i) for i in range(len(names))], names)
        (out_dir / "templates.txt").write_text(set_templates(spec.name), encoding="utf-8")
        return write_splits(out_dir, splits, opts.limit, spec.name)


def builders() -> dict[str, type[SuiteBuilder]]:
    """A registered builder class per set of the table."""
    def doc(spec: SuiteSet) -> str:
        layouts = [f"CoOp's {spec.coop[0]}" if spec.coop else "", "torchvision's layout" if spec.tv else ""]
        return f"{spec.name} ({spec.classes} classes) from {' or '.join(filter(None, layouts))}, for zero-shot."

    def foreign(spec: SuiteSet) -> tuple[fuse.ForeignFile, ...]:
        coop = (fuse.ForeignFile(f"**/{spec.coop[0]}", "json", CoopItem, "train"),) if spec.coop else ()
        return coop + tvlayouts.FOREIGN.get(spec.name, ())

    return {name: type(f"Suite_{name}", (SuiteBuilder,), {"spec": spec, "__doc__": doc(spec),
                                                          "foreign_files": foreign(spec)})
            for name, spec in SETS.items()}
