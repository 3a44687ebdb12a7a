"""Validation retrieval during training: every trained pair (and the recipe's extra eval pairs)."""

from __future__ import annotations

import torch

from fuse.data.load import SplitData
from fuse.eval.retrieval import evaluate_retrieval


@torch.no_grad()
def evaluate_split(model, split: SplitData, latents: dict[str, torch.Tensor], trained: list[tuple[str, str]],
                   ks=(1, 5, 10), chunk_size: int = 4096, batch_size: int = 64) -> dict[str, float]:
    """Recall@K both ways for each pair of the split; 'mean/R@K' averages the trained pairs' directions.

    Frozen towers use their cached latents, the others run online. Each pair ranks among its own
    items only. With several pairs, each pair's own mean is kept as '<a>-<b>/mean/R@K'.
    """
    emb = {m: model.project(m, latents[m] if m in latents else model.encode(m, values, batch_size))
           for m, values in split.values.items()}
    out: dict[str, float] = {}
    several = len(split.pairs) > 1
    for pair, data in split.pairs.items():
        a, b = pair
        rows = split.rows[pair]
        metrics = evaluate_retrieval(emb[a][rows[a]], emb[b][rows[b]], data.pairs, names=pair, ks=ks,
                                     chunk_size=chunk_size)
        for key, value in metrics.items():
            out[f"{a}-{b}/{key}" if several and key.startswith("mean/") else key] = value
    if several:
        directions = [f"{x}_to_{y}" for p in split.pairs if p in trained or p[::-1] in trained for x, y in (p, p[::-1])]
        for k in ks:
            out[f"mean/R@{k}"] = sum(out[f"{d}/R@{k}"] for d in directions) / max(1, len(directions))
    return out
