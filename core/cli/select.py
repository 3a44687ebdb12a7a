"""`fuse select CANDIDATES.yaml --data SAMPLE.jsonl`: rank encoder pairs before training them."""

from __future__ import annotations

import click


@click.command("select")
@click.argument("candidates", type=click.Path(dir_okay=False))
@click.option("--data", "sample", required=True, type=click.Path(dir_okay=False),
              help="Paired JSONL sample to score on (training pairs, never the val split you report).")
@click.option("--out", default="runs/select", show_default=True, type=click.Path(file_okay=False),
              help="Folder for select.json, heatmap.png and recipe.yaml (the top pair).")
@click.option("--k", type=int, help="Mutual k-NN neighbourhood (overrides the candidates file).")
@click.option("--rank-by", type=click.Choice(["linear_cka", "rbf_cka", "mutual_knn"]),
              help="Score to rank by (overrides the candidates file).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps.")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Latent cache root. Default: $FUSE_CACHE or ~/.cache/fuse.")
def select_command(candidates, sample, out, k, rank_by, device, cache_dir):
    """Encode SAMPLE once per candidate encoder, score every cross-modal pair (linear CKA, RBF CKA,
    mutual k-NN) and print them ranked, with their cost."""
    from pathlib import Path

    from fuse.base.devices import resolve_device
    from fuse.data.datasets import default_cache_root
    from fuse.model.selection import load_candidates, select
    from fuse.model.selection_report import format_table, write_outputs

    from fuse.base.owned import claim

    cfg = load_candidates(candidates)
    claim(Path(out), "select", "--out")  # before any encoding: new, empty or an earlier select's folder
    if k is not None:
        if k < 1:
            raise click.BadParameter("k must be at least 1", param_hint="--k")
        cfg.k = k
    if rank_by:
        cfg.rank_by = rank_by
    report = select(cfg, sample, Path(cache_dir) if cache_dir else default_cache_root(), resolve_device(device),
                    where=str(candidates))
    paths = write_outputs(report, cfg, Path(candidates), Path(sample), Path(out))
    click.echo(format_table(report))
    click.echo(f"wrote {paths['json']}, {paths['heatmap']} and {paths['recipe']} (top pair)")
