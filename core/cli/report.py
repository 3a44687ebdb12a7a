"""`fuse report RUN_OR_EXPORT [--data MANIFEST] -o report.html` and `fuse report --compare RUN RUN ...`."""

from __future__ import annotations

import click


@click.command("report")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data", "manifest", type=click.Path(dir_okay=False),
              help="Paired JSONL to show (default: the run's validation split).")
@click.option("--compare", is_flag=True, help="Put the given run dirs side by side (metrics, recipe differences, curves).")
@click.option("-o", "--out", default="report.html", show_default=True, type=click.Path(dir_okay=False))
@click.option("--samples", default=8, show_default=True, help="Sampled (and worst) queries to show.")
@click.option("--seed", default=0, show_default=True, help="Seed of the query sample.")
@click.option("--device", default="auto", show_default=True)
def report_command(paths, manifest, compare, out, samples, seed, device):
    """Write one self-contained HTML page (no network) about a run or an export: recipe, curves, before/after,
    top-5 of sampled queries with the right item marked, the worst queries, the modality gap."""
    from fuse.api.atomic import write_text
    from fuse.api.devices import resolve_device
    from fuse.api.errors import FuseError
    from fuse.model.html_report import compare_page, report_page

    if compare:
        if len(paths) < 2:
            raise FuseError("--compare takes two or more run dirs, e.g. fuse report --compare runs/a runs/b")
        write_text(out, compare_page(list(paths)))
        click.echo(f"wrote {out} ({len(paths)} runs)")
        return
    if len(paths) != 1:
        raise FuseError("give one run or export dir (or --compare RUN RUN ...)")
    text, numbers = report_page(paths[0], manifest, samples, seed, str(resolve_device(device)))
    write_text(out, text)
    click.echo(f"wrote {out}: {numbers['queries']} queries, R@1 {numbers['R@1']:.1f}%, modality gap {numbers['gap']:.3f}")
