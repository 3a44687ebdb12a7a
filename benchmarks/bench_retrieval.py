"""Chunked retrieval vs the full similarity matrix: time and peak memory, as ratios (not a test).

    python benchmarks/bench_retrieval.py [--queries 20000] [--candidates 20000] [--dim 256]
"""

from __future__ import annotations

import argparse
import time

import torch

from fuse.eval import retrieval_metrics


def full_matrix_recall(q, c, ks=(1, 5, 10)):
    """The naive way: materialise [Nq, Nc], argsort every row (one positive per query: i <-> i)."""
    sims = q @ c.T
    order = sims.argsort(dim=1, descending=True)
    ranks = (order == torch.arange(q.shape[0])[:, None]).float().argmax(1) + 1
    return {f"R@{k}": float((ranks <= k).float().mean() * 100) for k in ks}


def measure(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--queries", type=int, default=8000)
    p.add_argument("--candidates", type=int, default=8000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--chunk", type=int, default=1024)
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    c = torch.nn.functional.normalize(torch.randn(args.candidates, args.dim, generator=g), dim=-1)
    q = torch.nn.functional.normalize(c[:args.queries] + 0.5 * torch.randn(args.queries, args.dim, generator=g), dim=-1)
    positives = torch.arange(args.queries).repeat(2, 1).T
    ours, t_ours = measure(lambda: retrieval_metrics(q, c, positives, chunk_size=args.chunk))
    full, t_full = measure(lambda: full_matrix_recall(q, c))
    # working buffers counted from their shapes (torch's allocator is invisible to tracemalloc)
    mem_full = args.queries * args.candidates * (4 + 8)  # float scores + int64 argsort
    mem_ours = args.queries * args.chunk * (4 + 1 + 1)   # one float block + two bool masks
    print(f"{args.queries} queries x {args.candidates} candidates, dim {args.dim}, chunk {args.chunk}")
    print(f"R@1 chunked {ours['R@1']:.3f} vs full {full['R@1']:.3f}")
    print(f"time: chunked {t_ours:.2f} s, full matrix + argsort {t_full:.2f} s; full/chunked = {t_full / t_ours:.1f}x")
    print(f"working memory beyond the embeddings: chunked {mem_ours / 2**20:.0f} MiB, full {mem_full / 2**20:.0f} MiB; "
          f"full/chunked = {mem_full / mem_ours:.0f}x")


if __name__ == "__main__":
    main()
