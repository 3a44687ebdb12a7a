"""`fuse data build NAME` (a registered dataset's manifests) and `fuse data pack MANIFEST OUT_DIR` (tar shards)."""

from __future__ import annotations

import click


@click.group("data")
def data_group():
    """Build paired datasets, and pack manifests into tar shards."""


@data_group.command("build")
@click.argument("name")
@click.option("--option", "-o", "options", multiple=True, help="Dataset option key=value (repeatable).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Default: $FUSE_CACHE or ~/.cache/fuse.")
@click.option("--force", is_flag=True, help="Rebuild even if a build exists.")
def build_command(name, options, cache_dir, force):
    """Build dataset NAME (see `fuse plugins --kind dataset`) and print its manifest paths."""
    from pathlib import Path

    from fuse.data.datasets import build_dataset, default_cache_root
    from fuse.recipes.recipe import apply_override, parse_override

    opts: dict = {}
    for text in options:
        keys, value = parse_override(text)
        apply_override(opts, keys, value, text)
    splits = build_dataset(name, opts, Path(cache_dir) if cache_dir else default_cache_root(),
                           where=f"dataset {name}", force=force)
    for split, path in splits.items():
        click.echo(f"{split}: {path}")


@data_group.command("pack")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--shard-size", type=int, default=10000, show_default=True, help="Records (keys) per shard.")
@click.option("--files", "files", multiple=True, help="A field holding file paths (repeatable); default: every "
              "field whose values are all existing files.")
@click.option("--force", is_flag=True, help="Overwrite shards that exist.")
def pack_command(manifest, out_dir, shard_size, files, force):
    """Write MANIFEST (JSONL) as uncompressed tar shards in OUT_DIR (WebDataset layout: KEY.png, KEY.txt,
    KEY.json) and print the data.train pattern naming them."""
    from fuse.data.pack import brace_pattern, pack_manifest

    paths = pack_manifest(manifest, out_dir, shard_size, list(files) or None, force=force)
    click.echo(f"{len(paths)} shard(s): {brace_pattern(paths)}")
