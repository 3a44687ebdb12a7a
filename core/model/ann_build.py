"""Building and updating the approximate index (``fuse.model.ann``) from the exact index's shards.

Called by ``update_index`` under the index folder's lock, right after index.json is written: the
shards it lists are the truth, and the approximate index follows them by shard (new shards added,
gone shards' ids removed; HNSW, which faiss cannot remove from, rebuilt). A new faiss file is
written atomically under a new name, ann.json is pointed at it, and then the old file is deleted.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np

from fuse.base.atomic import atomic_path, locked, write_text
from fuse.model.ann import (ANN_FORMAT, ANN_META, GROWTH, HNSW, choose_kind, import_faiss, ivfpq_params,
                            read_ann_meta, read_faiss, shard_ids)
from fuse.model.index import load_shard, read_meta

FILE = re.compile(r"ann-(ivfpq|hnsw)-(\d+)\.faiss")
TRAIN_PER_LIST = 64   # k-means points per IVF list


def ann_files(folder: Path) -> dict[str, int]:
    """The faiss files in ``folder``, by name -> generation."""
    return {p.name: int(m.group(2)) for p in folder.iterdir() if (m := FILE.fullmatch(p.name))}


def drop_ann(folder: Path, keep: str | None = None) -> None:
    """Delete every faiss file but ``keep`` (and ann.json when nothing is kept)."""
    for name in ann_files(folder):
        if name != keep:
            (folder / name).unlink(missing_ok=True)
    if keep is None:
        (folder / ANN_META).unlink(missing_ok=True)


def training_sample(folder: Path, meta: dict, count: int) -> np.ndarray:
    """About ``count`` embeddings from shards spread evenly over the index (each verified by its hash)."""
    names = list(meta["shards"])
    rows = sum(meta["shards"][s]["rows"] for s in names)
    need = min(len(names), -(-count * len(names) // max(1, rows)))
    picks = sorted({names[i] for i in np.linspace(0, len(names) - 1, need).round().astype(int)})
    sample = np.concatenate([load_shard(folder, s, meta["shards"][s]).numpy() for s in picks])
    return sample[np.linspace(0, len(sample) - 1, min(count, len(sample))).astype(int)]


def new_index(faiss, folder: Path, meta: dict, kind: str) -> tuple[object, dict]:
    """An empty (trained) faiss index of ``kind`` for the items of ``meta``, and its parameters."""
    dim, n = meta["embed_dim"], len(meta["items"])
    if kind == "hnsw":
        base = faiss.IndexHNSWFlat(dim, HNSW["M"], faiss.METRIC_INNER_PRODUCT)
        base.hnsw.efConstruction = HNSW["ef_construction"]
        return faiss.IndexIDMap(base), dict(HNSW)
    params = ivfpq_params(n, dim)
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, params["nlist"], params["m"], params["nbits"],
                             faiss.METRIC_INNER_PRODUCT)
    index.train(training_sample(folder, meta, TRAIN_PER_LIST * params["nlist"]))
    return index, params


def stale(old: dict | None, kind: str, live: dict, n: int) -> bool:
    """Whether ``old`` must be rebuilt rather than updated: another kind, an HNSW that lost items, or an
    IVF-PQ trained on a collection GROWTH times smaller or larger than this one."""
    if old is None or old["kind"] != kind:
        return True
    if kind == "hnsw":
        return any(live.get(name) != entry for name, entry in old["shards"].items())
    return not old["trained_on"] / GROWTH <= n <= old["trained_on"] * GROWTH


def sync_ann(folder: Path, meta: dict, kind: str = "auto", rebuild: bool = False) -> str:
    """Bring the approximate index in ``folder`` up to date with ``meta`` (its index.json, just written).
    ``kind``: auto keeps the kind already built, else sizes from the item count (``choose_kind``); an
    approximate index that exists is kept up to date even when ``kind`` is exact. Returns the kind kept."""
    old = None if rebuild else read_ann_meta(folder, meta)
    n = len(meta["items"])
    want = choose_kind(kind, n, old and old["kind"])
    if want == "exact" and old is not None:
        want = old["kind"]
    if want == "exact" or n == 0:
        drop_ann(folder)
        return "exact"
    faiss = import_faiss(want)
    live = {name: {"sha256": e["sha256"], "rows": e["rows"]} for name, e in meta["shards"].items()}
    t = time.perf_counter()
    if stale(old, want, live, n):
        index, params = new_index(faiss, folder, meta, want)
        old = {"shards": {}, "trained_on": n, "params": params}
    else:
        gone = [name for name, entry in old["shards"].items() if live.get(name) != entry]
        if not gone and all(old["shards"].get(name) == entry for name, entry in live.items()):
            return want  # up to date: nothing written
        index = read_faiss(faiss, folder, old)
        if gone:
            index.remove_ids(np.concatenate([shard_ids(s, old["shards"][s]["rows"]) for s in gone]))
    new = [name for name, entry in live.items() if old["shards"].get(name) != entry]
    for name in new:
        index.add_with_ids(load_shard(folder, name, meta["shards"][name]).numpy(), shard_ids(name, live[name]["rows"]))
    file = f"ann-{want}-{max(ann_files(folder).values(), default=0) + 1:05d}.faiss"
    with atomic_path(folder / file) as tmp:
        faiss.write_index(index, str(tmp))
    ann = {"format": ANN_FORMAT, "kind": want, "file": file, "model": meta["model"], "embed_dim": meta["embed_dim"],
           "params": old["params"], "trained_on": old["trained_on"], "items": n, "shards": live,
           "update_s": round(time.perf_counter() - t, 2)}
    write_text(folder / ANN_META, json.dumps(ann, indent=1))
    drop_ann(folder, keep=file)
    return want


def update_ann(folder: Path, kind: str = "auto", rebuild: bool = False) -> str:
    """``sync_ann`` for the index in ``folder`` as it is on disk, under the folder's lock (as ``update_index``)."""
    with locked(folder):
        meta = read_meta(folder)
        return "exact" if meta is None else sync_ann(folder, meta, kind, rebuild)
