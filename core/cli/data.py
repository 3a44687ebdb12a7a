"""`fuse data build NAME`: build a registered dataset's manifests ahead of training."""

from __future__ import annotations

import click


@click.group("data")
def data_group():
    """Build and inspect paired datasets."""


@data_group.command("build")
@click.argument("name")
@click.option("--option", "-o", "options", multiple=True, help="Dataset option key=value (repeatable).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Default: $FUSE_CACHE or ~/.cache/fuse.")
@click.option("--force", is_flag=True, help="Rebuild even if a build exists.")
def build_command(name, options, cache_dir, force):
    """Build dataset NAME (see `fuse plugins --kind dataset`) and print its manifest paths."""
    from pathlib import Path

    from ..datasets import build_dataset, default_cache_root
    from ..recipe import apply_override, parse_override

    opts: dict = {}
    for text in options:
        keys, value = parse_override(text)
        apply_override(opts, keys, value, text)
    splits = build_dataset(name, opts, Path(cache_dir) if cache_dir else default_cache_root(),
                           where=f"dataset {name}", force=force)
    for split, path in splits.items():
        click.echo(f"{split}: {path}")
