"""`fuse select`'s scoring of one pair at large N (default 50,000): wall time and peak memory.

    OMP_NUM_THREADS=2 python benchmarks/select_scoring.py [N] [DX] [DY]    # default 50000 1280 384

Synthetic latents (no encoder runs): X ~ N(0, I) [N, DX] and Y = X W + noise [N, DY], so the
spaces are related. Linear CKA is exact in feature space (never an N x N matrix); RBF CKA is the
unbiased HSIC averaged over minibatches of 1,024 (one 1,024 x 1,024 kernel at a time); mutual
k-NN ranks cosine neighbours in chunks of 1,024 queries. Writes benchmarks/results/select_scoring_<N>.json.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import torch

from fuse.select.selection import score_pair

n, dx, dy = (int(a) for a in (sys.argv[1:] + ["50000", "1280", "384"][len(sys.argv[1:]):]))
g = torch.Generator().manual_seed(0)
x = torch.randn(n, dx, generator=g)
y = x @ torch.randn(dx, dy, generator=g) / dx ** 0.5 + 0.5 * torch.randn(n, dy, generator=g)
start = time.perf_counter()
scores = score_pair(x, y, k=10, batch_size=1024)
seconds = time.perf_counter() - start
result = {"n": n, "dx": dx, "dy": dy, "seconds": round(seconds, 1), **scores,
          "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
          "threads": torch.get_num_threads(), "latents": "synthetic: Y = X W + noise"}
print(json.dumps(result, indent=1))
out = Path(__file__).parent / "results" / f"select_scoring_{n}.json"
out.parent.mkdir(exist_ok=True)
out.write_text(json.dumps(result, indent=1))
