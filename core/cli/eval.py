"""`fuse eval MODEL --task retrieval|zeroshot --data MANIFEST` and `--task probe --train T [--test S]`: the
numbers papers report."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("eval")
@click.argument("model_dir", metavar="MODEL", type=click.Path(file_okay=False))
@click.option("--task", type=click.Choice(["retrieval", "zeroshot", "probe"]), default="retrieval", show_default=True)
@click.option("--benchmark", help="Standard benchmarks in their published protocols, e.g. coco,imagenet, or all "
              "(whatever is under --root): coco, flickr30k, audiocaps, clotho, msrvtt, imagenet, esc50. Writes "
              "benchmarks.json and .md to --out.")
@click.option("--root", type=click.Path(file_okay=False), help="--benchmark: the folder holding the datasets "
              "(coco/, flickr30k/, audiocaps/, clotho/, msrvtt/, imagenet/, esc50/; docs/datasets-and-benchmarks.md).")
@click.option("--limit", type=click.IntRange(min=1), help="--benchmark: the first N items of each split only (a "
              "quick check; not the published protocol).")
@click.option("--data", "manifest", type=click.Path(dir_okay=False),
              help="JSONL manifest: pairs (retrieval) or items with a label field (zeroshot).")
@click.option("--train", "train", type=click.Path(dir_okay=False),
              help="probe: JSONL of items with a label field to fit the linear probe on.")
@click.option("--test", "test", type=click.Path(dir_okay=False), help="probe: JSONL of labelled items to score it on.")
@click.option("--test-fraction", type=float, help="probe: instead of --test, hold out this fraction of --train.")
@click.option("--split-key", help="probe: with --test-fraction, records with the same value of this field stay on "
              "one side (default: each record on its own).")
@click.option("--out", type=click.Path(file_okay=False), help="Write eval.json and a PNG here.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--classes", type=click.Path(dir_okay=False), help="zeroshot: class names, one per line "
              "(default: the labels found in the manifest).")
@click.option("--label-field", default="label", show_default=True, help="zeroshot, probe: the record field with the label.")
@click.option("--templates", default="imagenet", show_default=True, help="zeroshot: imagenet, short, sound or a file.")
@click.option("--modality", help="zeroshot: the tower to classify (default: the non-text one); probe: the tower "
              "to probe (needed when the model has more than one).")
@click.option("--modalities", help="retrieval: the two towers to evaluate, e.g. audio,image (any two of the model, "
              "trained together or not; default: the model's two).")
@click.option("--chunk-size", default=4096, show_default=True, help="Candidates per similarity block.")
@click.option("--batch-size", default=32, show_default=True, help="Encoding batch size.")
@click.option("--device", default="auto", show_default=True)
@click.option("--no-baselines", is_flag=True, help="Skip the untrained-heads and raw-latents baselines.")
@click.option("--skip-bad-media", is_flag=True, help="retrieval: leave out pairs whose image/audio file is "
              "unreadable, empty or silent (default: stop and name the file).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="retrieval, zeroshot: read latents training "
              "cached in this cache dir's latent store (e.g. ~/.cache/fuse) instead of encoding them again; --benchmark: "
              "where dataset builds and latents go (default $FUSE_CACHE or ~/.cache/fuse).")
def eval_command(model_dir, task, benchmark, root, limit, manifest, train, test, test_fraction, split_key, out, as_json,
                 classes, label_field, templates, modality, modalities, chunk_size, batch_size, device, no_baselines,
                 skip_bad_media, cache_dir):
    """Evaluate MODEL (an export dir or a run dir) on a manifest, or on standard benchmarks (--benchmark)."""
    from fuse.base.devices import resolve_device
    from fuse.base.errors import FuseError
    from fuse.eval import run_probe, run_retrieval, run_zeroshot
    from fuse.eval.tables import format_table, plot_recall_curves, plot_worst_classes
    from fuse.eval.zeroshot import read_class_list
    from fuse.base.owned import claimable
    from fuse.model.load import load_aligned

    if out:  # checked before any work (written at the end): new, empty or fuse eval's; never a user's folder
        claimable(Path(out), "eval", "--out", legacy=_eval_files)
    if benchmark or root:
        return _benchmarks(model_dir, benchmark, root, limit, out, as_json, batch_size, device, no_baselines, cache_dir,
                           given=[f for f, v in (("--data", manifest), ("--train", train), ("--test", test)) if v])
    if task == "probe" and (manifest or not train):
        raise FuseError("--task probe takes --train LABELS.jsonl and --test LABELS.jsonl (or --test-fraction), not --data.")
    if task != "probe" and (not manifest or train or test or test_fraction is not None):
        raise FuseError(f"--task {task} takes --data MANIFEST; --train/--test/--test-fraction are for --task probe.")
    model = load_aligned(model_dir, device=str(resolve_device(device)))
    if task == "probe":
        report = run_probe(model, train, test, test_fraction, split_key, modality, label_field, batch_size=batch_size,
                           baselines=not no_baselines, progress=not as_json)
    elif task == "retrieval":
        report = run_retrieval(model, manifest, chunk_size=chunk_size, batch_size=batch_size,
                               baselines=not no_baselines, progress=not as_json, skip_bad_media=skip_bad_media,
                               modalities=tuple(m.strip() for m in modalities.split(",")) if modalities else None,
                               cache_dir=cache_dir)
    else:
        names = read_class_list(classes) if classes else None
        report = run_zeroshot(model, manifest, names, label_field, templates, modality, chunk_size=chunk_size,
                              batch_size=batch_size, baselines=not no_baselines, progress=not as_json,
                              cache_dir=cache_dir)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        metrics = {k: {m: v for m, v in r.items() if not isinstance(v, dict)} for k, r in report["metrics"].items()}
        click.echo(format_table(metrics, [k for k in next(iter(metrics.values())) if "R@" in k or "top" in k
                                          or "rank" in k or k == "C"]))
    if out:
        from fuse.base.atomic import write_text
        from fuse.base.owned import claim

        out = Path(out)
        claim(out, "eval", "--out", legacy=_eval_files)
        write_text(out / f"{task}.json", json.dumps(report, indent=2))
        if task == "probe":
            plot_worst_classes(report["metrics"]["model"]["per_class_top1"], out / "worst_classes.png")
        elif task == "retrieval":
            plot_recall_curves(report["curves"], out / "recall_at_k.png")
        else:
            plot_worst_classes(report["metrics"]["model"]["per_class_top1"], out / "worst_classes.png")
        if not as_json:
            click.echo(f"wrote {out}/{task}.json and a plot")


# What `fuse eval --out` wrote before it marked its folders: such a folder is recognised as its own.
EVAL_FILES = {"retrieval.json", "zeroshot.json", "probe.json", "benchmarks.json", "benchmarks.md", "worst_classes.png",
              "recall_at_k.png"}


def _eval_files(folder: Path) -> bool:
    return all(p.name in EVAL_FILES for p in folder.iterdir())


def _benchmarks(model_dir, names, root, limit, out, as_json, batch_size, device, no_baselines, cache_dir, given):
    """`fuse eval MODEL --benchmark NAMES --root DIR`: every benchmark's table in one JSON and one markdown file."""
    from fuse.base.devices import resolve_device
    from fuse.base.errors import FuseError
    from fuse.data.datasets import default_cache_root
    from fuse.eval.benchmarks import markdown_table, parse_names, run_benchmarks
    from fuse.model.load import load_aligned

    if not names or not root or given:
        raise FuseError("--benchmark NAME[,NAME...]|all and --root DIR go together"
                        + (f"; {', '.join(given)} is for --task runs" if given else "") + ".")
    selected = parse_names(names)
    model = load_aligned(model_dir, device=str(resolve_device(device)))
    report = run_benchmarks(model, selected, root, Path(cache_dir) if cache_dir else default_cache_root(),
                            everything=names.strip() == "all", batch_size=batch_size, baselines=not no_baselines,
                            progress=not as_json, limit=limit)
    table = markdown_table(report)
    click.echo(json.dumps(report, indent=2) if as_json else table)
    if out:
        from fuse.base.atomic import write_text
        from fuse.base.owned import claim

        out = Path(out)
        claim(out, "eval", "--out", legacy=_eval_files)
        write_text(out / "benchmarks.json", json.dumps(report, indent=2))
        write_text(out / "benchmarks.md", table + "\n")
        if not as_json:
            click.echo(f"wrote {out}/benchmarks.json and {out}/benchmarks.md")
