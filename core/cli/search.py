"""`fuse search MODEL --index DIR_OR_MANIFEST --query TEXT|FILE`: nearest items of an index, as a table."""

from __future__ import annotations

import contextlib
import json
import sys

import click


@click.command("search")
@click.argument("model_dir", metavar="MODEL", type=click.Path(file_okay=False))
@click.option("--index", "source", required=True, help="What to search: a folder (or glob) of files, or a .jsonl "
              "manifest. It is indexed once and updated when files are added, changed or removed.")
@click.option("--query", "-q", "queries", required=True, multiple=True,
              help="A text, or a file of another modality (repeat for several queries).")
@click.option("--k", default=10, show_default=True, type=click.IntRange(min=1), help="Results per query.")
@click.option("--modality", help="The tower whose values are indexed (default: inferred from the source).")
@click.option("--query-modality", help="The tower that embeds the queries (default: inferred from them).")
@click.option("--index-dir", type=click.Path(file_okay=False),
              help="Where the index lives (default: SOURCE/.fuse-index/MODALITY, or beside the manifest).")
@click.option("--rebuild", is_flag=True, help="Start the index over (e.g. it was built by another model).")
@click.option("--index-kind", type=click.Choice(["auto", "exact", "ivfpq", "hnsw"]), default="auto", show_default=True,
              help="exact, or an approximate faiss index kept beside it (needs the faiss extra); auto: the kind the "
              "index already has, else exact below 100,000 items and IVF-PQ from there.")
@click.option("--nprobe", type=click.IntRange(min=1), help="IVF-PQ: lists scanned per query (default: nlist / 64).")
@click.option("--ef-search", type=click.IntRange(min=1), help="HNSW: candidate list size per query (default 64).")
@click.option("--rerank", type=click.IntRange(min=1),
              help="IVF-PQ: candidates per result rescored exactly (default: 10 per million items, at least 10).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--batch-size", default=32, show_default=True, help="Encoding batch size.")
@click.option("--device", default="auto", show_default=True, help="auto: CUDA when present, else the CPU.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Latent cache (default: $FUSE_CACHE or "
              "~/.cache/fuse).")
@click.option("--no-cache", is_flag=True, help="Do not read or write the latent cache.")
def search_command(model_dir, source, queries, k, modality, query_modality, index_dir, rebuild, index_kind, nprobe,
                   ef_search, rerank, as_json, batch_size, device, cache_dir, no_cache):
    """Search SOURCE with MODEL: each query's K nearest items (rank, cosine score, path or text)."""
    from fuse.model.load import load_aligned
    from fuse.base.devices import resolve_device
    from fuse.cli.embed import cache_option
    from fuse.model.index import IndexOptions
    from fuse.model.search import search

    model = load_aligned(model_dir, device=str(resolve_device(device)))
    # with --json, stdout carries the JSON alone: progress notes (latent cache reads) go to stderr
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        options = IndexOptions(rebuild=rebuild, cache_dir=cache_option(cache_dir, no_cache), batch_size=batch_size,
                               progress=not as_json, kind=index_kind, nprobe=nprobe, ef_search=ef_search,
                               rerank=rerank)
        results = search(model, list(queries), source, k, query_modality=query_modality, modality=modality,
                         index_dir=index_dir, options=options)
    if as_json:
        click.echo(json.dumps([{"query": q, "results": r} for q, r in zip(queries, results)], indent=2))
        return
    for q, hits in zip(queries, results):
        click.echo(f"query: {q}")
        click.echo(f"{'rank':>4}  {'score':>6}  item")
        for hit in hits:
            click.echo(f"{hit['rank']:>4}  {hit['score']:>6.3f}  {hit['value']}")
