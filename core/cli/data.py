"""`fuse data build NAME` (a registered dataset's manifests) and `fuse data pack MANIFEST OUT_DIR` (tar shards)."""

from __future__ import annotations

import click


@click.group("data")
def data_group():
    """Build paired datasets, and pack manifests into tar shards."""


def _option_params(schema) -> list[click.Option]:
    """One --flag per simple field of a dataset's Options (str, number, bool, choice); others go through -o."""
    import types
    import typing

    params = []
    for name, field in schema.model_fields.items():
        flag, ann = "--" + name.replace("_", "-"), field.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        base = args[0] if typing.get_origin(ann) in (typing.Union, types.UnionType) and len(args) == 1 else ann
        shown = None if field.is_required() else field.default
        help_text = (field.description or "") + ("  [required]" if field.is_required() else
                                                 f"  [default: {shown}]" if shown is not None else "")
        if base is bool:
            params.append(click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=help_text))
        elif typing.get_origin(base) is typing.Literal:
            params.append(click.Option([flag, name], type=click.Choice([str(a) for a in typing.get_args(base)]),
                                       help=help_text))
        elif base in (str, int, float):
            params.append(click.Option([flag, name], type=base, help=help_text))
    return params


def _dataset_command(name: str) -> click.Command:
    """`fuse data build NAME`: the dataset's own options as flags, documented by its Options' descriptions."""
    from fuse.base.plugin_manager import registry

    entry = registry("dataset").get(name, "fuse data build")

    def run(options, cache_dir, force, **flags):
        from pathlib import Path

        from fuse.data.datasets import build_dataset, default_cache_root
        from fuse.recipes.recipe import apply_override, parse_override

        opts: dict = {k: v for k, v in flags.items() if v is not None}
        for text in options:
            keys, value = parse_override(text)
            apply_override(opts, keys, value, text)
        splits = build_dataset(name, opts, Path(cache_dir) if cache_dir else default_cache_root(),
                               where=f"dataset {name}", force=force)
        for split, path in splits.items():
            click.echo(f"{split}: {path}")

    params = _option_params(entry.options_schema) + [
        click.Option(["--option", "-o", "options"], multiple=True, help="Any dataset option key=value (repeatable)."),
        click.Option(["--cache-dir"], type=click.Path(file_okay=False), help="Default: $FUSE_CACHE or ~/.cache/fuse."),
        click.Option(["--force"], is_flag=True, help="Rebuild even if a build exists.")]
    return click.Command(name, params=params, callback=run,
                         help=f"{entry.description} Prints the manifest path of each split.")


class DatasetCommands(click.Group):
    """`fuse data build NAME ...`: one subcommand per registered dataset, so `--help` shows its options."""

    def list_commands(self, ctx):
        from fuse.base.plugin_manager import registry

        return registry("dataset").names()

    def get_command(self, ctx, name):
        return _dataset_command(name)


@data_group.group("build", cls=DatasetCommands)
def build_command():
    """Build dataset NAME (see `fuse plugins --kind dataset`) and print its manifest paths. `fuse data build NAME
    --help` lists that dataset's options."""


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
