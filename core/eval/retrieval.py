"""Retrieval recall@K with many-to-many ground truth, in bounded memory, on the embeddings' device.

Never materialises the query x candidate matrix: ``fuse.eval.rank`` reads each query's best
positive (highest score, ties -> lowest candidate index) once, then multiplies each
[query tile, candidate chunk] block once to count the candidates ranked ahead of it (higher
score, or equal score and lower index). Memory is the embeddings plus one tile.
"""

from __future__ import annotations

import torch

from fuse.eval.rank import ranks_of_best_positive


def retrieval_metrics(query: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor,
                      ks=(1, 5, 10), chunk_size: int = 4096) -> dict[str, float]:
    """R@K (percent), mean and median rank over queries that have at least one positive."""
    ranks = ranks_of_best_positive(query, candidates, positives, chunk_size)
    ranks = ranks[ranks > 0].double()
    if ranks.numel() == 0:
        return {**{f"R@{k}": float("nan") for k in ks}, "mean_rank": float("nan"), "median_rank": float("nan")}
    out = {f"R@{k}": float((ranks <= k).double().mean() * 100) for k in ks}
    out["mean_rank"] = float(ranks.mean())
    out["median_rank"] = float(ranks.median())
    return out


def evaluate_retrieval(emb_a: torch.Tensor, emb_b: torch.Tensor, pairs: torch.Tensor,
                       names: tuple[str, str] = ("image", "text"), ks=(1, 5, 10),
                       chunk_size: int = 4096) -> dict[str, float]:
    """Both directions, flat keys like 'image_to_text/R@1', plus 'mean/R@K' over directions."""
    a, b = names
    out = {}
    for key, q, c, pos in ((f"{a}_to_{b}", emb_a, emb_b, pairs), (f"{b}_to_{a}", emb_b, emb_a, pairs.flip(1))):
        for metric, value in retrieval_metrics(q, c, pos, ks, chunk_size).items():
            out[f"{key}/{metric}"] = value
    for k in ks:
        out[f"mean/R@{k}"] = (out[f"{a}_to_{b}/R@{k}"] + out[f"{b}_to_{a}/R@{k}"]) / 2
    return out
