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

from fuse.base.errors import DataError, FuseError
from fuse.data.datasets import build_dataset
from fuse.eval.run import run_retrieval, run_zeroshot


@dataclass(frozen=True)
class Benchmark:
    task: str                     # "retrieval" or "zeroshot"
    dataset: str                  # registered dataset builder
    splits: tuple[str, ...]       # the split the papers report, then fallbacks (first one built is used)
    modalities: tuple[str, str]   # (query tower, text tower) for zero-shot; the two towers for retrieval
    folders: tuple[str, ...]      # the dataset's folder names under --root
    templates: str = "imagenet"
    folds: tuple[str, ...] = ()   # zero-shot over folds: the reported numbers are their mean


BENCHMARKS = {
    "coco": Benchmark("retrieval", "coco", ("test", "val"), ("image", "text"), ("coco", "mscoco", "COCO")),
    "flickr30k": Benchmark("retrieval", "flickr30k", ("test",), ("image", "text"), ("flickr30k", "Flickr30k")),
    "audiocaps": Benchmark("retrieval", "audiocaps", ("test",), ("audio", "text"), ("audiocaps", "AudioCaps")),
    "clotho": Benchmark("retrieval", "clotho", ("test",), ("audio", "text"), ("clotho", "Clotho")),
    "msrvtt": Benchmark("retrieval", "msrvtt", ("test_1k", "test"), ("video", "text"), ("msrvtt", "MSRVTT")),
    "imagenet": Benchmark("zeroshot", "imagenet", ("val",), ("image", "text"), ("imagenet", "ILSVRC2012")),
    "esc50": Benchmark("zeroshot", "esc50", ("all",), ("audio", "text"), ("esc50", "ESC-50-master", "ESC-50"),
                       templates="sound", folds=tuple(f"fold{f}" for f in range(1, 6))),
}


def parse_names(text: str) -> list[str]:
    """'coco,imagenet' or 'all' -> benchmark names; an unknown one is one line listing the known ones."""
    names = list(BENCHMARKS) if text.strip() == "all" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise FuseError(f"--benchmark: unknown benchmark(s) {', '.join(unknown) or '(none given)'}; choose from "
                        f"{', '.join(BENCHMARKS)} or all.")
    return names


def dataset_root(bench: Benchmark, root: Path, alone: bool) -> Path | None:
    """The benchmark's folder under root (root itself when it is the only benchmark asked for)."""
    for name in bench.folders:
        if (root / name).is_dir():
            return root / name
    return root if alone else None


def _zeroshot(model, bench: Benchmark, splits: dict[str, Path], split: str, common: dict) -> dict:
    """One zero-shot run per fold (or on the split), with the builder's labels and prompt names."""
    table = splits[split].parent / "classes.tsv"
    rows = [line.split("\t") for line in table.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels, names = [r[0] for r in rows], [r[1] for r in rows]
    query, text = bench.modalities
    runs = {}
    for part in bench.folds or (split,):
        runs[part] = run_zeroshot(model, splits[part], labels, "label", bench.templates, query, text,
                                  class_names=names, **common)
    first = next(iter(runs.values()))
    metrics = {}
    for variant in first["metrics"]:
        keys = [k for k, v in first["metrics"][variant].items() if isinstance(v, float)]
        metrics[variant] = {k: sum(r["metrics"][variant][k] for r in runs.values()) / len(runs) for k in keys}
    return {"task": "zeroshot", "classes": len(labels), "templates": first["templates"],
            "queries": sum(r["queries"] for r in runs.values()), "folds": list(bench.folds), "metrics": metrics}


def run_benchmark(model, name: str, root: Path, cache_dir: Path, batch_size: int = 32, baselines: bool = True,
                  progress: bool = False, limit: int | None = None) -> dict:
    """One benchmark on the dataset at ``root``: build (or reuse) its manifests, then its protocol."""
    bench = BENCHMARKS[name]
    lacking = [m for m in bench.modalities if m not in model.modalities]
    if lacking:
        raise FuseError(f"benchmark {name} needs the towers {' and '.join(bench.modalities)}; this model has "
                        f"{', '.join(model.modalities)} (no {', '.join(lacking)}). Evaluate a model that aligns "
                        f"{' and '.join(bench.modalities)}.")
    options = {"root": str(root), **({"limit": limit} if limit else {})}
    splits = build_dataset(bench.dataset, options, cache_dir, where=f"benchmark {name}")
    split = next((s for s in bench.splits if s in splits), None)
    if split is None:
        raise DataError(f"benchmark {name}: the {bench.dataset} build under {root} has no {' or '.join(bench.splits)} "
                        f"split (it has {', '.join(splits)}).")
    common = {"batch_size": batch_size, "baselines": baselines, "progress": progress, "cache_dir": cache_dir}
    if bench.task == "retrieval":
        report = run_retrieval(model, splits[split], modalities=bench.modalities, **common)
        report.pop("curves")
    else:
        report = _zeroshot(model, bench, splits, split, common)
    return {"dataset": bench.dataset, "root": str(root), "split": split, **report}


def run_benchmarks(model, names: list[str], root: str | Path, cache_dir: str | Path, *, everything: bool = False,
                   **kw) -> dict:
    """Each named benchmark found under ``root``. With ``everything`` (``--benchmark all``) a benchmark whose
    folder or towers are absent, or whose data does not build, is skipped with its reason; otherwise that is
    an error."""
    root, cache_dir = Path(root).expanduser().resolve(), Path(cache_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"--root {root} is not a folder; give the folder that holds the datasets (coco/, imagenet/, "
                        "...).")
    results, skipped = {}, {}
    for name in names:
        where = dataset_root(BENCHMARKS[name], root, alone=len(names) == 1 and not everything)
        if where is None:
            if not everything:
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
    return {"root": str(root), "benchmarks": results, "skipped": skipped}


def _rows(name: str, result: dict) -> list[tuple[str, str]]:
    """(metric label, metric key) rows of one benchmark's table."""
    if result["task"] == "zeroshot":
        how = " (5-fold mean)" if result["folds"] else ""
        return [(f"top-1{how}", "top1"), (f"top-5{how}", "top5"), (f"mean per-class{how}", "mean_per_class_top1")]
    a, b = result["modalities"]
    return [(f"{x}→{y} R@{k}", f"{x}_to_{y}/R@{k}") for x, y in ((a, b), (b, a)) for k in (1, 5, 10)]


def markdown_table(report: dict) -> str:
    """All benchmarks in one markdown table: a row per metric, a column per variant (model, baselines)."""
    variants: list[str] = []
    for result in report["benchmarks"].values():
        variants += [v for v in result["metrics"] if v not in variants]
    lines = ["| benchmark | split | metric | " + " | ".join(variants) + " |",
             "|---|---|---|" + "---:|" * len(variants)]
    for name, result in report["benchmarks"].items():
        size = (f"{result['queries']} queries, {result['classes']} classes" if result["task"] == "zeroshot" else
                ", ".join(f"{n} {m}" for m, n in result["items"].items()))
        for label, key in _rows(name, result):
            cells = [result["metrics"].get(v, {}).get(key) for v in variants]
            lines.append(f"| {name} | {result['split']} ({size}) | {label} | "
                         + " | ".join("-" if c is None else f"{c:.2f}" for c in cells) + " |")
    if report["skipped"]:
        lines.append("")
    lines += [f"- skipped {name}: {why}" for name, why in report["skipped"].items()]
    return "\n".join(lines)
