"""A million-item index searched exactly and approximately (IVF-PQ, HNSW), with the shipped code paths.

Writes an index folder the way ``fuse.model.index.update_index`` does (safetensors shards + index.json),
with synthetic clustered unit vectors standing in for embeddings (no model could embed a million
inputs on this machine in a benchmark's time; see ``clustered``), then:

* exact: ``open_index`` + ``.embeddings`` (every shard read and hash-checked) and ``EmbeddingIndex.search``
  (``fuse.eval.rank.topk``), checked against a plain full matmul + sort;
* each approximate kind: built from the shards by ``fuse.model.ann_build.sync_ann`` (as `fuse search
  --index-kind` does), opened by ``open_index`` (IVF lists memory-mapped) and searched through
  ``EmbeddingIndex.search``: recall@k against the exact answer, queries per second (all queries in one
  batch, as the exact search gets them, after one single-query search that opens it) and memory (file
  size; resident memory added by opening and searching it, index.json's items already read: the
  process's own, and mapped file pages, which are the page cache), at the default knobs and a few others.

HNSW is built only up to ``--hnsw-max`` items (its build is the slow part on this machine).

    OMP_NUM_THREADS=1 python benchmarks/bench_search.py [N] [DIM] [--hnsw-max M]  # default 1000000 256, HNSW to 1M
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import context, machine, parse, write  # noqa: E402

from fuse.base.atomic import save_tensors, write_text
from fuse.base.weights import tensors_hash
from fuse.model.ann_build import sync_ann
from fuse.model.index import FORMAT, FORMAT_VERSION, META, SHARD_ROWS, open_index

CLUSTERS, LATENT, SPREAD, NOISE = 1000, 64, 0.7, 0.4
KNOBS = {"ivfpq": [{"nprobe": 8}, {"nprobe": 16}, {"nprobe": 64}, {"rerank": 20}, {"rerank": 40}],
         "hnsw": [{"ef_search": 16}, {"ef_search": 32}, {"ef_search": 128}]}


def clustered(gen: torch.Generator, rows: int, dim: int, basis: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Unit vectors around CLUSTERS random centres: centre + SPREAD x a direction in a shared LATENT-d
    subspace + NOISE x an isotropic direction, normalised (embeddings are clustered and of low
    intrinsic dimension; uniform random vectors have no neighbours worth finding)."""
    pick = centres[torch.randint(len(centres), (rows,), generator=gen)]
    latent = torch.nn.functional.normalize(torch.randn(rows, basis.shape[0], generator=gen) @ basis, dim=-1)
    iso = torch.nn.functional.normalize(torch.randn(rows, dim, generator=gen), dim=-1)
    return torch.nn.functional.normalize(pick + SPREAD * latent + NOISE * iso, dim=-1)


def space(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(dim, min(LATENT, dim // 2), generator=gen))[0].T.contiguous()
    return basis, torch.nn.functional.normalize(torch.randn(CLUSTERS, dim, generator=gen), dim=-1)


def write_index(folder: Path, n: int, dim: int) -> None:
    gen, (basis, centres) = torch.Generator().manual_seed(1), space(dim)
    items, shards = [], {}
    for s, start in enumerate(range(0, n, SHARD_ROWS)):
        rows = min(SHARD_ROWS, n - start)
        emb = clustered(gen, rows, dim, basis, centres)
        name = f"shard-{s:05d}.safetensors"
        save_tensors({"embeddings": emb}, folder / name)
        shards[name] = {"rows": rows, "sha256": tensors_hash({"embeddings": emb})}
        items += [[f"/data/item-{start + r:07d}.png", f"/data/item-{start + r:07d}.png|1000|1", name, r]
                  for r in range(rows)]
    write_text(folder / META, json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "model":
                                          {"fingerprint": "bench", "path": ""}, "modality": "image", "input": "image",
                                          "embed_dim": dim, "next_shard": len(shards), "shards": shards,
                                          "items": items}))


def rss_gb(kind: str = "RssAnon") -> float:
    """Resident memory now (not the peak), GiB: RssAnon (the process's own) or RssFile (mapped file pages:
    the page cache, shared and reclaimable)."""
    text = Path("/proc/self/status").read_text()
    return int(next(line for line in text.splitlines() if line.startswith(kind)).split()[1]) / 2**20


def timed_search(index, q: torch.Tensor, k: int, **knobs) -> tuple[list, float]:
    t = time.perf_counter()
    hits = index.search(q, k, **knobs)
    return hits, time.perf_counter() - t


def recall(hits: list, exact: list) -> float:
    return float(np.mean([len({h["value"] for h in a} & {h["value"] for h in b}) / len(b) for a, b in zip(hits, exact)]))


def approximate(folder: Path, kind: str, q: torch.Tensor, k: int, exact: list) -> dict:
    """Build ``kind`` from the shards, open it, search at the default knob and the others in KNOBS."""
    meta = open_index(folder).meta
    t = time.perf_counter()
    sync_ann(folder, meta, kind)
    build = time.perf_counter() - t
    ann_meta = json.loads((folder / "ann.json").read_text())
    index = open_index(folder)
    gc.collect()
    before, mapped = rss_gb(), rss_gb("RssFile")  # index.json read (as for exact): what the faiss index adds
    _, first = timed_search(index, q[:1], k)
    hits, seconds = timed_search(index, q, k)
    row = {"build_s": round(build, 1), "file_bytes": (folder / ann_meta["file"]).stat().st_size,
           "rss_added_gb": round(rss_gb() - before, 3), "mapped_added_gb": round(rss_gb("RssFile") - mapped, 3),
           "params": ann_meta["params"], "first_query_s": round(first, 2)}
    row["default"] = {"recall": round(recall(hits, exact), 4), "qps": round(len(q) / seconds, 1)}
    row["sweep"] = []
    for knob in KNOBS[kind]:
        hits, seconds = timed_search(index, q, k, **knob)
        row["sweep"].append({**knob, "recall": round(recall(hits, exact), 4), "qps": round(len(q) / seconds, 1)})
    del index
    (folder / "ann.json").unlink()
    (folder / ann_meta["file"]).unlink()
    return row


def exact_search(folder: Path, q: torch.Tensor, k: int) -> tuple[list, dict]:
    gc.collect()
    start = rss_gb()
    t = time.perf_counter()
    index = open_index(folder)
    index.kind = "exact"
    gc.collect()
    before, mapped = rss_gb(), rss_gb("RssFile")  # index.json's items, held by every kind
    emb = index.embeddings
    t_load = time.perf_counter() - t
    _, first = timed_search(index, q[:1], k)
    hits, seconds = timed_search(index, q, k)
    rss, mapped = rss_gb() - before, rss_gb("RssFile") - mapped
    ref = torch.sort(q @ emb.T, dim=1, descending=True, stable=True).indices[:, :k]
    values = index.values
    same = all([h["value"] for h in row] == [values[i] for i in r.tolist()] for row, r in zip(hits, ref))
    return hits, {"open_and_read_s": round(t_load, 1), "qps": round(len(q) / seconds, 1), "search_s": round(seconds, 2),
                  "rss_added_gb": round(rss, 3), "mapped_added_gb": round(mapped, 3), "same_as_full_sort": same,
                  "recall": 1.0, "first_query_s": round(first, 2),
                  "index_json_rss_gb": round(before - start, 3)}


def main(n: int = 1_000_000, dim: int = 256, queries: int = 256, k: int = 10, hnsw_max: int = 1_000_000) -> dict:
    import faiss

    folder = Path(tempfile.mkdtemp(prefix="fuse-bench-search-"))
    try:
        t = time.perf_counter()
        write_index(folder, n, dim)
        t_write = time.perf_counter() - t
        size = sum(p.stat().st_size for p in folder.iterdir())
        basis, centres = space(dim)
        q = clustered(torch.Generator().manual_seed(2), queries, dim, basis, centres)
        exact, row = exact_search(folder, q, k)
        kinds = {"exact": {**row, "file_bytes": size}}
        gc.collect()
        for kind in ["ivfpq", "hnsw"] if n <= hnsw_max else ["ivfpq"]:
            kinds[kind] = approximate(folder, kind, q, k, exact)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = {"n": n, "dim": dim, "queries": queries, "k": k, "write_s": round(t_write, 1), "hnsw_max": hnsw_max,
           "data": f"{CLUSTERS} clusters, {LATENT}-d latent subspace (benchmarks/bench_search.py clustered)",
           "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(), "kinds": kinds, "machine": machine()}
    base = kinds["exact"]["qps"]
    print(f"{n} x {dim}, {queries} queries top-{k} in one batch {context()}")
    for kind, r in kinds.items():
        d = r.get("default", r)
        print(f"  {kind:6} recall@{k} {d['recall']:.3f}  {d['qps']:9.1f} q/s ({d['qps'] / base:6.1f}x exact)  "
              f"file {r['file_bytes'] / 2**20:8.1f} MiB  RSS +{r['rss_added_gb']:.2f} GiB own "
              f"+{r['mapped_added_gb']:.2f} GiB mapped  "
              f"build {r.get('build_s', r.get('open_and_read_s'))} s  {r.get('params', '')}")
        for s in r.get("sweep", []):
            print(f"         {s}")
    write(f"bench_search_{n}x{dim}", out)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("n", type=int, nargs="?", default=1_000_000)
    p.add_argument("dim", type=int, nargs="?", default=256)
    p.add_argument("--queries", type=int, default=256)
    p.add_argument("--hnsw-max", type=int, default=1_000_000, help="build HNSW only up to this many items")
    args = parse(p, n=5000, dim=16, queries=32)
    main(args.n, args.dim, args.queries, hnsw_max=args.hnsw_max)
