"""The standard benchmarks, each in its published protocol, over datasets held under one root.

A benchmark names a registered dataset builder (fuse.plugins.datasets ships them), the split the
papers report, the towers it needs and its protocol: retrieval R@1/5/10 both ways with every item
and all its captions (COCO 5k, Flickr30K 1k, AudioCaps, Clotho, MSR-VTT 1k-A), or zero-shot top-1/
top-5 and mean per-class accuracy with the dataset's classes and templates (ImageNet-1k val with
CLIP's 80 templates; ESC-50 as the mean over its five folds). Builds are cached like any dataset's,
and latents go through the latent store, so a second model sharing a tower re-encodes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fuse.base import foreign
from fuse.base.errors import DataError, FuseError
from fuse.data.datasets import build_dataset
from fuse.eval.run import run_retrieval, run_zeroshot
from fuse.eval.zeroshot import read_classes


@dataclass(frozen=True)
class Benchmark:
    task: str                     # "retrieval" or "zeroshot"
    dataset: str                  # registered dataset builder
    splits: tuple[str, ...]       # the split the papers report, then fallbacks (first one built is used)
    modalities: tuple[str, str]   # (query tower, text tower) for zero-shot; the two towers for retrieval
    folders: tuple[str, ...]      # the dataset's folder names under --root
    templates: str = "imagenet"   # unless the build ships its own (templates.txt beside classes.tsv)
    folds: tuple[str, ...] = ()   # zero-shot over folds: the reported numbers are their mean
    metric: str = "top1"          # the number the CLIP paper reports (zero-shot: top1 or mean_per_class_top1)
    published: tuple[int, ...] = ()  # the published split's size (queries) in each layout fuse reads
    suite: bool = False           # one of the zero-shot suite (--benchmark zeroshot)


def _suite(dataset: str, folders: tuple[str, ...], published: tuple[int, ...], per_class: bool = False,
           splits: tuple[str, ...] = ("test", "all")) -> Benchmark:
    """A zero-shot suite set: image classification with the templates its build ships."""
    return Benchmark("zeroshot", dataset, splits, ("image", "text"), (dataset, *folders), published=published,
                     metric="mean_per_class_top1" if per_class else "top1", suite=True)


# Published test sizes: the official test split (torchvision's layout), then CoOp's split_zhou test where it differs.
SUITE = {
    "imagenet": Benchmark("zeroshot", "imagenet", ("val",), ("image", "text"), ("imagenet", "ILSVRC2012"),
                          published=(50000,), suite=True),
    "imagenet_v2": _suite("imagenet_v2", ("imagenetv2",), (10000,)),
    "imagenet_sketch": _suite("imagenet_sketch", ("imagenet-sketch",), (50889,)),
    "imagenet_a": _suite("imagenet_a", ("imagenet-adversarial", "imagenet-a"), (7500,)),
    "imagenet_r": _suite("imagenet_r", ("imagenet-rendition", "imagenet-r"), (30000,)),
    "cifar10": _suite("cifar10", ("cifar-10-batches-bin",), (10000,)),
    "cifar100": _suite("cifar100", ("cifar-100-binary",), (10000,)),
    "stl10": _suite("stl10", ("stl10_binary",), (8000,)),
    "food101": _suite("food101", ("food-101",), (25250, 30300)),
    "oxford_pets": _suite("oxford_pets", ("oxford-iiit-pet", "pets"), (3669,), per_class=True),
    "caltech101": _suite("caltech101", ("caltech-101",), (2465,), per_class=True),
    "stanford_cars": _suite("stanford_cars", ("cars",), (8041,)),
    "flowers102": _suite("flowers102", ("oxford_flowers", "flowers-102"), (6149, 2463), per_class=True),
    "fgvc_aircraft": _suite("fgvc_aircraft", ("fgvc-aircraft-2013b",), (3333,), per_class=True),
    "sun397": _suite("sun397", ("SUN397",), (19850,)),
    "dtd": _suite("dtd", (), (1880, 1692)),
    "eurosat": _suite("eurosat", (), (8100,)),
    "ucf101": _suite("ucf101", (), (3783,)),
}


BENCHMARKS = {
    "coco": Benchmark("retrieval", "coco", ("test", "val"), ("image", "text"), ("coco", "mscoco", "COCO"),
                      published=(5000,)),
    "flickr30k": Benchmark("retrieval", "flickr30k", ("test",), ("image", "text"), ("flickr30k", "Flickr30k"),
                           published=(1000,)),
    "audiocaps": Benchmark("retrieval", "audiocaps", ("test",), ("audio", "text"), ("audiocaps", "AudioCaps")),
    "clotho": Benchmark("retrieval", "clotho", ("test",), ("audio", "text"), ("clotho", "Clotho"), published=(1045,)),
    "msrvtt": Benchmark("retrieval", "msrvtt", ("test_1k", "test"), ("video", "text"), ("msrvtt", "MSRVTT"),
                        published=(1000, 2990)),
    "esc50": Benchmark("zeroshot", "esc50", ("all",), ("audio", "text"), ("esc50", "ESC-50-master", "ESC-50"),
                       templates="sound", folds=tuple(f"fold{f}" for f in range(1, 6)), published=(2000,)),
    **SUITE,
}


@dataclass(frozen=True)
class Selection:
    """What ``--benchmark`` asked for, decided once: the names, whether it was ``all`` (absent or failing
    benchmarks are skipped with their reason) and which may be absent (``zeroshot``: the suite's sets)."""
    names: tuple[str, ...]
    everything: bool = False
    optional: tuple[str, ...] = ()


def parse_names(text: str) -> Selection:
    """'coco,imagenet', 'zeroshot' (the suite) or 'all' -> the Selection; an unknown name is one line listing
    the known ones."""
    names, given = [], [n.strip() for n in text.split(",") if n.strip()]
    for name in given:
        names += list(BENCHMARKS) if name == "all" else list(SUITE) if name == "zeroshot" else [name]
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise FuseError(f"--benchmark: unknown benchmark(s) {', '.join(unknown) or '(none given)'}; choose from "
                        f"{', '.join(BENCHMARKS)}, zeroshot (the suite) or all.")
    return Selection(tuple(names), everything="all" in given, optional=tuple(SUITE) if "zeroshot" in given else ())


def dataset_root(bench: Benchmark, root: Path, alone: bool) -> Path | None:
    """The benchmark's folder under root (root itself when it is the only benchmark asked for)."""
    for name in bench.folders:
        if (root / name).is_dir():
            return root / name
    return root if alone else None


def _zeroshot(model, bench: Benchmark, splits: dict[str, Path], split: str, common: dict) -> dict:
    """One zero-shot run per fold (or on the split), with the builder's labels, prompt names and templates."""
    build = splits[split].parent
    labels, names = read_classes(build / "classes.tsv", f"the {bench.dataset} build's class list")
    templates = str(build / "templates.txt") if (build / "templates.txt").is_file() else bench.templates
    query, text = bench.modalities
    runs = {}
    for part in bench.folds or (split,):
        runs[part] = run_zeroshot(model, splits[part], labels, "label", templates, query, text,
                                  class_names=names, **common)
    first = next(iter(runs.values()))
    metrics = {}
    for variant in first["metrics"]:
        keys = [k for k, v in first["metrics"][variant].items() if isinstance(v, float)]
        metrics[variant] = {k: sum(r["metrics"][variant][k] for r in runs.values()) / len(runs) for k in keys}
    return {"task": "zeroshot", "classes": len(labels), "templates": first["templates"],
            "queries": sum(r["queries"] for r in runs.values()), "folds": list(bench.folds), "metric": bench.metric,
            "metrics": metrics}


def protocol_note(bench: Benchmark, split: str, size: int) -> str:
    """'' when the run covers the published split, else why its numbers are not the papers' protocol."""
    if bench.suite and split == "all":
        return f"no test split in this layout: all {size:,} images, not the published protocol"
    if bench.published and size not in bench.published:
        noun = {"audio": "clips", "video": "videos"}.get(bench.modalities[0], "images")
        return f"{size:,} of {bench.published[0]:,} {noun}: not the published protocol"
    return ""


def run_benchmark(model, name: str, root: Path, cache_dir: Path, batch_size: int = 32, baselines: bool = True,
                  progress: bool = False, limit: int | None = None, on_missing: str = "error") -> dict:
    """One benchmark on the dataset at ``root``: build (or reuse) its manifests, then its protocol."""
    bench = BENCHMARKS[name]
    lacking = [m for m in bench.modalities if m not in model.modalities]
    if lacking:
        raise FuseError(f"benchmark {name} needs the towers {' and '.join(bench.modalities)}; this model has "
                        f"{', '.join(model.modalities)} (no {', '.join(lacking)}). Evaluate a model that aligns "
                        f"{' and '.join(bench.modalities)}.")
    # the options `fuse data build` would pass, so a build made there (--on-missing skip included) is reused
    options = {"root": str(root), **({"limit": limit} if limit else {}),
               **({"on_missing": on_missing} if on_missing != "error" else {})}
    splits = build_dataset(bench.dataset, options, cache_dir, where=f"benchmark {name}")
    split = next((s for s in bench.splits if s in splits), None)
    if split is None:
        raise DataError(f"benchmark {name}: the {bench.dataset} build under {root} has no {' or '.join(bench.splits)} "
                        f"split (it has {', '.join(splits)}).")
    common = {"batch_size": batch_size, "baselines": baselines, "progress": progress, "cache_dir": cache_dir}
    if bench.task == "retrieval":
        report = run_retrieval(model, splits[split], modalities=bench.modalities, **common)
        report.pop("curves")
        size = report["items"][bench.modalities[0]]
    else:
        report = _zeroshot(model, bench, splits, split, common)
        size = report["queries"]
    return {"dataset": bench.dataset, "root": str(root), "split": split, "protocol": protocol_note(bench, split, size),
            **report}


def run_benchmarks(model, selection: Selection | list[str], root: str | Path, cache_dir: str | Path, **kw) -> dict:
    """Each selected benchmark found under ``root`` (a list of names selects just those). With ``all`` a
    benchmark whose folder or towers are absent, or whose data does not build, is skipped with its reason;
    optional ones (``zeroshot``: the suite) are skipped when their folder is absent; otherwise that is an
    error. Two or more suite sets also get their average of the paper's metric."""
    if not isinstance(selection, Selection):
        selection = Selection(tuple(selection))
    names, everything, optional = selection.names, selection.everything, selection.optional
    root, cache_dir = Path(root).expanduser().resolve(), Path(cache_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"--root {root} is not a folder; give the folder that holds the datasets (coco/, imagenet/, "
                        "...).")
    results, skipped = {}, {}
    for name in names:
        where = dataset_root(BENCHMARKS[name], root, alone=len(names) == 1 and not everything)
        if where is None:
            if not (everything or name in optional):
                raise DataError(f"benchmark {name}: no {' or '.join(BENCHMARKS[name].folders)} folder under {root}.")
            skipped[name] = f"no {BENCHMARKS[name].folders[0]}/ under {root}"
            continue
        try:
            results[name] = run_benchmark(model, name, where, cache_dir, **kw)
        except FuseError as exc:
            if not everything:
                raise
            skipped[name] = str(exc)
    if not results:
        raise DataError(f"No benchmark ran under {root}: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return {"root": str(root), "benchmarks": results, "skipped": skipped, "average": suite_average(results)}


def suite_average(results: dict) -> dict:
    """{"sets": [...], "metrics": {variant: mean}} of each suite set's paper metric, or {} for fewer than two."""
    ran = [n for n in results if BENCHMARKS[n].suite]
    if len(ran) < 2:
        return {}
    variants = [v for v in results[ran[0]]["metrics"] if all(v in results[n]["metrics"] for n in ran)]
    return {"sets": ran, "metrics": {v: sum(results[n]["metrics"][v][results[n]["metric"]] for n in ran) / len(ran)
                                     for v in variants}}


def metric_rows(name: str, result: dict) -> list[tuple[str, str]]:
    """(metric label, metric key) rows of one benchmark's table; the number the CLIP paper reports is marked."""
    if result["task"] == "zeroshot":
        how = " (5-fold mean)" if result["folds"] else ""
        rows = [(f"top-1{how}", "top1"), (f"top-5{how}", "top5"), (f"mean per-class{how}", "mean_per_class_top1")]
        paper = result.get("metric") if BENCHMARKS[name].suite else None
        return [(label + (" (paper)" if key == paper else ""), key) for label, key in rows]
    a, b = result["modalities"]
    return [(f"{x}→{y} R@{k}", f"{x}_to_{y}/R@{k}") for x, y in ((a, b), (b, a)) for k in (1, 5, 10)]


def markdown_table(report: dict) -> str:
    """All benchmarks in one markdown table: a row per metric, a column per variant (model, baselines), the
    suite's average row; a run off the published protocol says so in its split cell."""
    variants: list[str] = []
    for result in report["benchmarks"].values():
        variants += [v for v in result["metrics"] if v not in variants]
    lines = ["| benchmark | split | metric | " + " | ".join(variants) + " |",
             "|---|---|---|" + "---:|" * len(variants)]
    for name, result in report["benchmarks"].items():
        size = (f"{result['queries']} queries, {result['classes']} classes" if result["task"] == "zeroshot" else
                ", ".join(f"{n} {m}" for m, n in result["items"].items()))
        size += f"; {result['protocol']}" if result.get("protocol") else ""
        for label, key in metric_rows(name, result):
            cells = [result["metrics"].get(v, {}).get(key) for v in variants]
            lines.append(f"| {name} | {result['split']} ({size}) | {label} | "
                         + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    if report.get("average"):
        average = report["average"]
        cells = [average["metrics"].get(v) for v in variants]
        lines.append(f"| zero-shot average | {len(average['sets'])} sets | paper metric | "
                     + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    if report["skipped"]:
        lines.append("")
    lines += [f"- skipped {name}: {why}" for name, why in report["skipped"].items()]
    return "\n".join(lines)
