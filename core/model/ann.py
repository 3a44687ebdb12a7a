"""Approximate search beside an exact index: faiss IVF-PQ or HNSW, built from its shards (nothing re-embedded).

    INDEX/ann.json                  kind, parameters, the model fingerprint and dimension it was built
                                    for, its faiss file, and the shards it holds (name -> sha256)
    INDEX/ann-<kind>-NNNNN.faiss    the faiss index; each update writes a new generation and deletes the
                                    old one only after ann.json points at the new (a killed update leaves
                                    the old pair, and the orphan is swept next time)

An item's faiss id is ``(shard number << 32) | row``. Shards never change once written (removal
compacts a partly used shard into a new one, see ``fuse.model.index``), so bringing the approximate
index up to date is a difference of shard sets: ids of shards that are gone are removed, shards
that are new are added. IVF-PQ keeps ``m`` bytes per item and its id; it is read memory-mapped, and
its ``RERANK * k`` candidates are rescored exactly from the shards (memory-mapped too: only their
rows are read), so the scores are the exact cosines. HNSW keeps every vector and its graph in memory
and cannot remove items in faiss: a removal rebuilds it.
"""

from __future__ import annotations

import json
import math
import mmap
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fuse.base.atomic import atomic_path, write_text
from fuse.base.errors import FuseError, ModelFileError, PluginError

KINDS = ("auto", "exact", "ivfpq", "hnsw")
AUTO_APPROXIMATE_FROM = 100_000   # auto: exact below this many items, IVF-PQ from here on
ANN_META = "ann.json"
ANN_FORMAT = "fuse-ann-index"
RERANK = 10                       # IVF-PQ candidates per wanted result per million items (at least 10),
                                  # rescored exactly: a denser collection needs more to hold the true top k
NPROBE_FRACTION = 64              # default nprobe: nlist / 64 (at least 8 lists)
HNSW = {"M": 32, "ef_construction": 80, "ef_search": 64}
GROWTH = 4                        # IVF-PQ is retrained when the item count has grown or shrunk this much
SHARD = re.compile(r"shard-(\d+)\.safetensors")


def import_faiss(kind: str):
    """The faiss module, or one line saying which extra installs it."""
    try:
        import faiss
    except ImportError:
        raise PluginError(f"--index-kind {kind} needs faiss, which is not installed: pip install 'fuse-align[faiss]' "
                          "(or a faiss GPU build), or search with --index-kind exact.") from None
    return faiss


def faiss_installed() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def check_kind(kind: str) -> None:
    """Refuse an unknown kind, or an approximate one without faiss, before any work is done."""
    if kind not in KINDS:
        raise FuseError(f"Unknown --index-kind {kind!r} (index_kind=); choose one of {', '.join(KINDS)}.")
    if kind in ("ivfpq", "hnsw"):
        import_faiss(kind)


def choose_kind(kind: str, n: int, existing: str | None = None) -> str:
    """The index kind to keep: ``kind``, or for auto the kind the folder already has, else sized by ``n``
    (exact below AUTO_APPROXIMATE_FROM items or without faiss installed, IVF-PQ from there)."""
    check_kind(kind)
    if kind != "auto":
        return kind
    if existing:
        return existing
    return "ivfpq" if n >= AUTO_APPROXIMATE_FROM and faiss_installed() else "exact"


def ivfpq_params(n: int, dim: int) -> dict:
    """nlist ~ 2 sqrt(n) lists (a power of two, at most n / 39 so each centroid has its training points);
    m: the most sub-quantizers of >= 8 dimensions that divide ``dim``; 8-bit codes once there are enough points."""
    nlist = max(1, min(1 << round(math.log2(max(1.0, 2 * math.sqrt(n)))), n // 39))
    m = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
    nbits = max(1, min(8, int(math.log2(max(2, n // 39)))))
    return {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": max(min(8, nlist), nlist // NPROBE_FRACTION)}


def ids_of(meta: dict) -> np.ndarray:
    """Each item's faiss id, in item order."""
    numbers = {name: int(SHARD.fullmatch(name).group(1)) for name in meta["shards"]}
    return np.fromiter(((numbers[shard] << 32) | row for _, _, shard, row in meta["items"]), np.int64,
                       len(meta["items"]))


def shard_ids(name: str, rows: int) -> np.ndarray:
    return (int(SHARD.fullmatch(name).group(1)) << 32) + np.arange(rows, dtype=np.int64)


def mapped_shard(path: Path) -> np.ndarray:
    """A shard's embeddings [rows, D], memory-mapped from its safetensors file: only the pages of the rows
    used are read (random access: no read-ahead, which would pull whole shards into memory)."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            info = json.loads(f.read(size))["embeddings"]
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        mapped.madvise(mmap.MADV_RANDOM)
        dtype = np.dtype({"F32": np.float32, "F16": np.float16}[info["dtype"]])
        start, end = info["data_offsets"]
        rows = np.frombuffer(mapped, dtype, (end - start) // dtype.itemsize, 8 + size + start)
        return rows.reshape(tuple(info["shape"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"Index shard {path} is unreadable ({exc}); rebuild the index with --rebuild.") from None


def read_ann_meta(folder: Path, meta: dict) -> dict | None:
    """ann.json, checked against the exact index's model and dimension; None when there is none."""
    file = folder / ANN_META
    if not file.exists():
        return None
    try:
        ann = json.loads(file.read_text(encoding="utf-8"))
        built, kind = ann["model"], ann["kind"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(f"Approximate index {file} is unreadable ({exc}); delete it (it is rebuilt from the "
                             "shards) or run with --rebuild.") from None
    if ann.get("format") != ANN_FORMAT or kind not in ("ivfpq", "hnsw"):
        raise ModelFileError(f"{file} is not a {ANN_FORMAT} file; delete it or run with --rebuild.")
    ours = meta["model"]
    if built.get("fingerprint") != ours.get("fingerprint") or ann.get("embed_dim") != meta["embed_dim"]:
        raise ModelFileError(f"Approximate index {file} was built for model {built.get('path') or 'unknown'} "
                             f"({ann.get('embed_dim')}-d), not for the {meta['embed_dim']}-d model "
                             f"{ours.get('path') or 'unknown'} of {folder / 'index.json'}; delete {ANN_META} (it "
                             "is rebuilt from the shards) or run with --rebuild.")
    return ann


@dataclass
class AnnIndex:
    """A built approximate index, opened for search (IVF lists memory-mapped)."""

    folder: Path
    ann: dict
    meta: dict
    index: object = field(repr=False)
    _lookup: tuple | None = field(default=None, repr=False)
    _shards: dict = field(default_factory=dict, repr=False)

    @property
    def kind(self) -> str:
        return self.ann["kind"]

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Item positions of faiss ids (-1 for none)."""
        if self._lookup is None:
            all_ids = ids_of(self.meta)
            order = np.argsort(all_ids, kind="stable")
            self._lookup = (all_ids[order], order)
        sorted_ids, order = self._lookup
        at = np.clip(np.searchsorted(sorted_ids, ids), 0, max(0, len(sorted_ids) - 1))
        found = (ids >= 0) & (len(sorted_ids) > 0) & (sorted_ids[at] == ids)
        return np.where(found, order[at], -1)

    def search(self, query: np.ndarray, k: int, nprobe: int | None = None, ef_search: int | None = None,
               rerank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Scores and item positions [Q, k] of the best ``k`` per query (position -1: fewer found).
        IVF-PQ: ``nprobe`` lists scanned, ``rerank * k`` candidates rescored; HNSW: ``ef_search``."""
        faiss = import_faiss(self.kind)
        if query.shape[-1] != self.ann["embed_dim"]:
            raise ModelFileError(f"Approximate index {self.folder / ANN_META} holds {self.ann['embed_dim']}-d "
                                 f"embeddings but the queries are {query.shape[-1]}-d; search it with the model "
                                 "that built it, or --rebuild.")
        query = np.ascontiguousarray(query, dtype=np.float32)
        n = self.index.ntotal
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(k, ef_search or self.ann["params"]["ef_search"]))
            scores, ids = self.index.search(query, min(k, n), params=params)
            return scores, self.positions(ids)
        params = faiss.SearchParametersIVF(nprobe=nprobe or self.ann["params"]["nprobe"])
        rerank = rerank or max(RERANK, math.ceil(RERANK * n / 1_000_000))
        _, ids = self.index.search(query, min(k * rerank, n), params=params)
        return self.rerank(query, ids, k)

    def rerank(self, query: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosines of the candidates, read from the memory-mapped shards; the best ``k`` of each row."""
        names = {int(SHARD.fullmatch(s).group(1)): s for s in self.meta["shards"]}
        flat = ids[ids >= 0]
        vectors = np.empty((ids.size, query.shape[1]), np.float32)  # rows of missing ids are never ranked
        where = np.flatnonzero(ids.ravel() >= 0)
        shard_of, row_of = flat >> 32, flat & 0xFFFFFFFF
        for number in np.unique(shard_of):
            pick = shard_of == number
            name = names[int(number)]
            rows = self._shards.get(name)
            if rows is None:
                rows = self._shards[name] = mapped_shard(self.folder / name)
            vectors[where[pick]] = rows[row_of[pick]]
        scores = np.einsum("qcd,qd->qc", vectors.reshape(*ids.shape, -1), query)
        scores[ids < 0] = -np.inf
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, best, 1), self.positions(np.take_along_axis(ids, best, 1))


def open_ann(folder: Path, meta: dict) -> AnnIndex | None:
    """The folder's approximate index for search (IVF memory-mapped), or None when it has none."""
    ann = read_ann_meta(folder, meta)
    if ann is None:
        return None
    faiss = import_faiss(ann["kind"])
    return AnnIndex(folder, ann, meta, read_faiss(faiss, folder, ann, mmap=ann["kind"] == "ivfpq"))


def read_faiss(faiss, folder: Path, ann: dict, mmap: bool = False):
    """The faiss index ann.json points at (IVF lists memory-mapped when ``mmap``); unreadable: one line."""
    path = folder / ann["file"]
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP if mmap else 0)
    except RuntimeError as exc:
        raise ModelFileError(f"Approximate index {path} is unreadable ({str(exc).splitlines()[0][:200]}); delete "
                             f"{folder / ANN_META} (it is rebuilt from the shards) or run with --rebuild.") from None
