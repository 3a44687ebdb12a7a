"""A million-item index: reading it from disk and exact top-k search, with the shipped code paths.

Writes an index folder the way ``fuse.model.index.update_index`` does (safetensors shards + index.json),
with random unit vectors standing in for embeddings (no model could embed a million inputs on
this machine in a benchmark's time), then times ``open_index`` + ``.embeddings`` (every shard read
and hash-checked) and ``EmbeddingIndex.search`` (``fuse.eval.rank.topk``), and checks the answer
against a plain full matmul + sort. Peak RSS shows the search works in one tile of memory.

    python benchmarks/bench_search.py [N] [DIM]      # default 1000000 256
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import context, machine, parse, write  # noqa: E402

from fuse.base.atomic import save_tensors, write_text
from fuse.base.weights import tensors_hash
from fuse.model.index import FORMAT, FORMAT_VERSION, META, SHARD_ROWS, open_index


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_index(folder: Path, n: int, dim: int) -> None:
    gen = torch.Generator().manual_seed(0)
    items, shards = [], {}
    for s, start in enumerate(range(0, n, SHARD_ROWS)):
        rows = min(SHARD_ROWS, n - start)
        emb = torch.nn.functional.normalize(torch.randn(rows, dim, generator=gen), dim=-1)
        name = f"shard-{s:05d}.safetensors"
        save_tensors({"embeddings": emb}, folder / name)
        shards[name] = {"rows": rows, "sha256": tensors_hash({"embeddings": emb})}
        items += [[f"/data/item-{start + r:07d}.png", f"/data/item-{start + r:07d}.png|1000|1", name, r]
                  for r in range(rows)]
    write_text(folder / META, json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "model":
                                          {"fingerprint": "bench", "path": ""}, "modality": "image", "input": "image",
                                          "embed_dim": dim, "next_shard": len(shards), "shards": shards,
                                          "items": items}))


def main(n: int = 1_000_000, dim: int = 256, queries: int = 16, k: int = 10) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="fuse-bench-search-"))
    try:
        t = time.perf_counter()
        write_index(folder, n, dim)
        t_write = time.perf_counter() - t
        size = sum(p.stat().st_size for p in folder.iterdir())
        base = rss_gb()
        t = time.perf_counter()
        index = open_index(folder)
        emb = index.embeddings
        t_load = time.perf_counter() - t
        q = torch.nn.functional.normalize(torch.randn(queries, dim, generator=torch.Generator().manual_seed(1)), dim=-1)
        t = time.perf_counter()
        hits = index.search(q, k)
        t_search = time.perf_counter() - t
        peak = rss_gb()
        faiss_s = faiss_same = None
        try:  # for the record: FAISS's exact inner-product index on the same data (if installed)
            import faiss

            t = time.perf_counter()
            flat = faiss.IndexFlatIP(dim)
            flat.add(emb.numpy())
            faiss_build = time.perf_counter() - t
            t = time.perf_counter()
            _, fi = flat.search(q.numpy(), k)
            faiss_s = time.perf_counter() - t
        except ImportError:
            fi = None
        full = q @ emb.T  # the reference: every score at once, [queries, N]
        ref = torch.sort(full, dim=1, descending=True, stable=True).indices[:, :k]
        values = index.values
        exact = all([h["value"] for h in row] == [values[i] for i in r.tolist()] for row, r in zip(hits, ref))
        if fi is not None:
            faiss_same = bool((torch.from_numpy(fi) == ref).all())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = {"n": n, "dim": dim, "queries": queries, "k": k, "index_bytes": size, "write_s": round(t_write, 2),
           "open_and_read_s": round(t_load, 2), "search_s": round(t_search, 3), "exact_vs_full_sort": exact,
           "peak_rss_gb_before_search": round(base, 2), "peak_rss_gb_after_search": round(peak, 2),
           "faiss_flat_search_s": None if faiss_s is None else round(faiss_s, 3),
           "faiss_flat_build_s": None if faiss_s is None else round(faiss_build, 2), "faiss_same_as_full_sort": faiss_same,
           "machine": machine()}
    print(f"{n} x {dim} index ({size / 2**30:.2f} GiB on disk): open + read + verify {t_load:.1f} s, "
          f"{queries} queries top-{k} {t_search:.2f} s, same as a full sort: {exact}; peak RSS "
          f"{base:.2f} -> {peak:.2f} GiB (before the reference sort) {context()}")
    if faiss_s is not None:
        print(f"faiss IndexFlatIP: add {faiss_build:.2f} s, search {faiss_s:.3f} s, same as a full sort: {faiss_same}")
    write(f"bench_search_{n}x{dim}", out)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("n", type=int, nargs="?", default=1_000_000)
    p.add_argument("dim", type=int, nargs="?", default=256)
    args = parse(p, n=5000, dim=16)
    main(args.n, args.dim)
