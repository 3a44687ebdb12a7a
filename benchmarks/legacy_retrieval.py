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
