"""`fuse report RUN_OR_EXPORT [--data MANIFEST] -o report.html` and `fuse report --compare RUN RUN ...`."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--task", type=click.Choice(["retrieval", "zeroshot"]), default="retrieval", show_default=True,
              help="retrieval: paired data; zeroshot: labelled items, classified by text prompts (confusion matrix).")
@click.option("--data", "manifest", type=click.Path(dir_okay=False),
              help="retrieval: paired JSONL (default: the run's validation split); zeroshot: JSONL of items with a "
                   "label field.")
@click.option("--compare", is_flag=True, help="Put the given run dirs side by side (metrics, recipe differences, curves).")
@click.option("-o", "--out", default="report.html", show_default=True, type=click.Path(dir_okay=False))
@click.option("--samples", default=8, show_default=True, help="Sampled (and worst) queries to show.")
@click.option("--seed", default=0, show_default=True, help="Seed of the query sample.")
@click.option("--classes", type=click.Path(dir_okay=False),
              help="zeroshot: class labels, one per line (default: the labels the data holds).")
@click.option("--label-field", default="label", show_default=True, help="zeroshot: the record field with the label.")
@click.option("--templates", default="imagenet", show_default=True, help="zeroshot: imagenet, short, sound or a file.")
@click.option("--modality", help="zeroshot: the tower to classify (default: the non-text one).")
@click.option("--device", default="auto", show_default=True)
def report_command(paths, task, manifest, compare, out, samples, seed, classes, label_field, templates, modality,
                   device):
    """Write one self-contained HTML page (no network) about a run or an export: recipe, curves, before/after,
    top-5 of sampled queries with the right item marked, the worst queries, the modality gap; with
    --task zeroshot, the confusion matrix, per-class accuracy and each sampled item's top-5 classes."""
    from fuse.base.atomic import write_text
    from fuse.base.devices import resolve_device
    from fuse.base.errors import FuseError
    from fuse.eval.zeroshot import load_templates, read_class_list
    from fuse.model.report_html import check_replaceable
    from fuse.model.report import compare_page, report_page

    check_replaceable(out)
    if compare:
        if manifest or task != "retrieval":
            raise FuseError("--compare reads each run's own metrics and curves; --data and --task are for one "
                            "run's report (fuse report RUN --task zeroshot --data LABELS.jsonl).")
        if len(paths) < 2:
            raise FuseError("--compare takes two or more run dirs, e.g. fuse report --compare runs/a runs/b")
        write_text(out, compare_page(list(paths)))
        click.echo(f"wrote {out} ({len(paths)} runs)")
        return
    if len(paths) != 1:
        raise FuseError("give one run or export dir (or --compare RUN RUN ...)")
    options = {}
    if task == "zeroshot":  # bad class lists and templates are one line before the model loads
        load_templates(templates)
        options = {"classes": read_class_list(classes) if classes else None, "label_field": label_field,
                   "templates": templates, "query_modality": modality}
    elif classes or modality or label_field != "label" or templates != "imagenet":
        raise FuseError("--classes, --label-field, --templates and --modality are for --task zeroshot.")
    text, numbers = report_page(paths[0], manifest, samples, seed, str(resolve_device(device)), task, options)
    write_text(out, text)
    if task == "zeroshot":
        click.echo(f"wrote {out}: {numbers['queries']} items, {numbers['classes']} classes, "
                   f"top-1 {numbers['top1']:.1f}%, top-{numbers['k']} {numbers['topk']:.1f}%")
    else:
        click.echo(f"wrote {out}: {numbers['queries']} queries, R@1 {numbers['R@1']:.1f}%, "
                   f"modality gap {numbers['gap']:.3f}")
