"""`fuse embed MODEL --modality M INPUTS... --out FILE`: embeddings of many inputs, and their ids."""

from __future__ import annotations

from pathlib import Path

import click


def cache_option(cache_dir: str | None, no_cache: bool) -> Path | None:
    """The latent cache to reuse: --cache-dir, else $FUSE_CACHE or ~/.cache/fuse; None with --no-cache."""
    from fuse.data.datasets import default_cache_root

    return None if no_cache else Path(cache_dir or default_cache_root()).expanduser()


@click.command("embed")
@click.argument("model_dir", metavar="MODEL", type=click.Path(file_okay=False))
@click.argument("inputs", nargs=-1)
@click.option("--modality", "-m", required=True, help="The tower that embeds the inputs, e.g. image or text.")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False),
              help="Output file: .safetensors (tensor 'embeddings', ids in its metadata) or .npy (ids in "
                   "FILE.ids.json).")
@click.option("--batch-size", default=32, show_default=True, help="Encoding batch size.")
@click.option("--shard-rows", default=8192, show_default=True,
              help="Inputs per shard written as the job goes (an interrupted job resumes after the last shard).")
@click.option("--device", default="auto", show_default=True, help="auto: CUDA when present, else the CPU.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Latent cache (default: $FUSE_CACHE or "
              "~/.cache/fuse, the one training uses).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the latent cache.")
def embed_command(model_dir, inputs, modality, out, batch_size, shard_rows, device, cache_dir, no_cache):
    """Embed INPUTS with MODEL's MODALITY tower and write them to --out, in input order.

    INPUTS for file modalities (image, audio, ...): files, folders, globs, or a .txt list of paths.
    For text: strings, a text file with one string per line, or '-' / nothing for stdin."""
    from fuse.model.load import load_aligned
    from fuse.base.devices import resolve_device
    from fuse.model.collect import collect_inputs
    from fuse.model.embed_file import embed_to_file

    model = load_aligned(model_dir, device=str(resolve_device(device)))
    values = collect_inputs(model.input_kind(modality), list(inputs))
    path = embed_to_file(model, modality, values, Path(out), cache_option(cache_dir, no_cache), batch_size,
                         shard_rows)
    click.echo(f"wrote {len(values)} {modality} embeddings ({model.embed_dim}-d) to {path}")
