"""The pre-tiling retrieval kernel (fuse before the speed issue), kept only so
benchmarks/bench_retrieval.py can compare against it. Not imported by fuse.
"""

from __future__ import annotations

import torch


def _blocks(query, candidates, chunk_size):
    """(start, query @ candidates[start:start+chunk].T) for each candidate chunk."""
    for start in range(0, candidates.shape[0], chunk_size):
        yield start, query @ candidates[start:start + chunk_size].T


def _positive_scores(query, candidates, positives, chunk_size):
    """(query index, candidate index, score) of every positive pair, chunk by chunk."""
    q_idx, c_idx = positives[:, 0], positives[:, 1]
    for start, block in _blocks(query, candidates, chunk_size):
        inside = (c_idx >= start) & (c_idx < start + block.shape[1])
        yield q_idx[inside], c_idx[inside], block[q_idx[inside], c_idx[inside] - start]


def _best_positive(query, candidates, positives, chunk_size):
    """Per query: score and index of its best positive (ties -> lowest index); -inf if none.

    Scores come from the same chunked matmuls as the counting pass, so a positive is never
    ranked behind itself because of a different rounding.
    """
    nq, never = query.shape[0], torch.iinfo(torch.long).max
    best = torch.full((nq,), float("-inf"))
    for qi, _, scores in _positive_scores(query, candidates, positives, chunk_size):
        best = best.scatter_reduce(0, qi, scores, reduce="amax")
    best_idx = torch.full((nq,), never, dtype=torch.long)
    for qi, ci, scores in _positive_scores(query, candidates, positives, chunk_size):
        top = scores == best[qi]
        best_idx = best_idx.scatter_reduce(0, qi[top], ci[top], reduce="amin")
    return best, best_idx


@torch.no_grad()
def ranks_of_best_positive(query: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor,
                           chunk_size: int = 4096) -> torch.Tensor:
    """1-based rank of each query's best positive; 0 for queries without a positive."""
    query, candidates = query.float().cpu(), candidates.float().cpu()
    positives = positives.long().cpu()
    best, best_idx = _best_positive(query, candidates, positives, chunk_size)
    ahead = torch.zeros(query.shape[0], dtype=torch.long)
    for start, block in _blocks(query, candidates, chunk_size):  # block: [Nq, chunk]
        idx = torch.arange(start, start + block.shape[1])
        ahead += (block > best[:, None]).sum(1)
        ahead += ((block == best[:, None]) & (idx[None, :] < best_idx[:, None])).sum(1)
    has_positive = torch.isfinite(best)
    return torch.where(has_positive, ahead + 1, torch.zeros_like(ahead))


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
