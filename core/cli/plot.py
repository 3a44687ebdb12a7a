"""`fuse plot RUN_DIR`: redraw a run's metrics.png from its metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("plot")
@click.argument("run_dir", type=click.Path(file_okay=False))
def plot_command(run_dir):
    """Plot loss, learning rate, temperature and validation recall of a run."""
    from fuse.base.errors import DataError
    from fuse.training.metrics import plot_metrics

    jsonl = Path(run_dir) / "metrics.jsonl"
    if not jsonl.exists():
        raise DataError(f"{jsonl} not found: RUN_DIR must be a fuse run directory.")
    click.echo(f"wrote {plot_metrics(jsonl, Path(run_dir) / 'metrics.png')}")
