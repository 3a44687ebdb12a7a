"""The latent store: one folder per encoder identity, rows addressed per value, shards read mapped.

A folder holds every latent one frozen encoder (same weights, preprocessing, inference path and
storage dtype; see ``fuse.data.cache.latent_identity``) has ever produced, whatever value list asked
for it. Each shard is a safetensors file of rows plus a JSON record beside it (written after the
shard, both atomically): the record lists the keys of its rows (a digest of each value's
``InputKind.identity``), the shard's size, shape, file hash and whether every latent is finite.
A record is the proof that a shard is done, so a writer killed at any point leaves whole shards
with records, or files without records that its next run sweeps.

Reading never copies a shard: rows are gathered from ``numpy.memmap`` views of the tensors'
bytes (the safetensors header gives their offsets), so a table larger than memory costs only
the pages a batch touches, and those pages are file-backed (the kernel can drop them).
"""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from pathlib import Path

import numpy as np
import torch

from fuse.base.atomic import file_sha256, save_tensors, write_text
from fuse.base.errors import DataError
from fuse.base.latents import Tokens

_VERIFIED: set[tuple[str, int, int]] = set()  # (shard path, size, mtime): hashed once per process
STORE_FORMAT = 3  # 3: per-value rows (the format-2 `latents/` folders keyed whole value lists)
_NUMPY = {"F32": np.float32, "F16": np.float16, "BOOL": np.bool_}


def value_key(identity: str) -> str:
    """The key a value's row is stored under: a digest of its identity (fixed length, no paths kept)."""
    return hashlib.blake2b(identity.encode(), digest_size=12).hexdigest()


def mapped_tensors(path: Path) -> dict[str, np.ndarray]:
    """Read-only memory maps of a safetensors file's tensors (its JSON header gives their offsets)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        out[name] = (np.memmap(path, dtype=_NUMPY[info["dtype"]], mode="r", offset=8 + n + start, shape=shape)
                     if end > start else np.zeros(shape, _NUMPY[info["dtype"]]))
    return out


class LatentTable:
    """The latents of one value list, row i for value i, gathered from mapped shards on demand.

    ``table[idx]`` (a CPU LongTensor of rows) returns a new tensor (or Tokens) holding those rows;
    ``materialize()`` returns all of them, as the old in-memory cache did.
    """

    def __init__(self, shards: list[dict[str, np.ndarray]], shard_of: np.ndarray, row_of: np.ndarray, tokens: bool):
        self.shards, self.shard_of, self.row_of, self.tokens = shards, shard_of, row_of, tokens
        first = shards[0]["latents"] if shards else np.zeros((0, 0), np.float32)
        self.dtype = torch.from_numpy(np.zeros(0, first.dtype)).dtype
        self.dim = first.shape[-1]
        self.row_shape = tuple(first.shape[1:])  # pooled [D], or a sequence encoder's [N, D] per value
        self.length = max((s["latents"].shape[1] for s in shards), default=0) if tokens else None

    def __len__(self) -> int:
        return len(self.shard_of)

    @property
    def nbytes(self) -> int:
        """Bytes of the table when held in memory (what moving it to the device costs)."""
        per_row = (self.dim if self.tokens else int(np.prod(self.row_shape))) * \
            np.dtype(self.shards[0]["latents"].dtype).itemsize if self.shards else 0
        return len(self) * (per_row * self.length + self.length if self.tokens else per_row)

    def __getitem__(self, idx) -> torch.Tensor | Tokens:
        if isinstance(idx, slice):
            idx = np.arange(*idx.indices(len(self)))
        idx = np.asarray(idx.cpu() if isinstance(idx, torch.Tensor) else idx, dtype=np.int64)
        shard, row = self.shard_of[idx], self.row_of[idx]
        dtype = self.shards[0]["latents"].dtype if self.shards else np.float32
        if self.tokens:
            values = np.zeros((len(idx), self.length, self.dim), dtype)
            mask = np.zeros((len(idx), self.length), np.bool_)
        else:
            values = np.empty((len(idx), *self.row_shape), dtype)
        for k in np.unique(shard):
            sel = np.nonzero(shard == k)[0]
            rows = row[sel]
            order = np.argsort(rows, kind="stable")  # ascending offsets: sequential reads of the map
            part = self.shards[k]["latents"][rows[order]]
            if self.tokens:
                t = part.shape[1]
                values[sel[order], :t] = part
                mask[sel[order], :t] = self.shards[k]["mask"][rows[order]]
            else:
                values[sel[order]] = part
        if self.tokens:
            return Tokens(torch.from_numpy(values), torch.from_numpy(mask))
        return torch.from_numpy(values)

    def materialize(self, chunk: int = 65536) -> torch.Tensor | Tokens:
        """Every row, in value order, as one in-memory tensor (or Tokens)."""
        parts = [self[np.arange(i, min(i + chunk, len(self)))] for i in range(0, len(self), chunk)]
        if self.tokens:
            return Tokens.cat(parts) if parts else Tokens(torch.zeros(0, 0, self.dim, dtype=self.dtype),
                                                          torch.zeros(0, 0, dtype=torch.bool))
        return torch.cat(parts) if parts else torch.zeros(0, *self.row_shape, dtype=self.dtype)


class LatentStore:
    """One encoder identity's folder: ``store.json``, then ``shard-*.safetensors`` + ``shard-*.json`` pairs."""

    def __init__(self, folder: Path, identity: dict):
        self.folder = Path(folder)
        self.index: dict[str, tuple[str, int]] = {}   # value key -> (shard name, row)
        self.records: dict[str, dict] = {}
        meta = self.folder / "store.json"
        if not meta.exists():
            write_text(meta, json.dumps({"format": STORE_FORMAT, "identity": identity}, indent=2, default=str))

    def refresh(self) -> None:
        """Add the shards other writers (ranks, processes) have published since we last looked."""
        for rec in sorted(self.folder.glob("shard-*.json")):
            name = rec.name[:-len(".json")]
            if name in self.records:
                continue
            try:
                record = json.loads(rec.read_text())
            except (OSError, ValueError):
                continue  # a record is written atomically: unreadable means removed while we read
            self.records[name] = record
            for row, key in enumerate(record["keys"]):
                self.index.setdefault(key, (name, row))

    def missing(self, keys: list[str]) -> list[str]:
        """The keys (in order, without repeats) that no published shard holds."""
        return list(dict.fromkeys(k for k in keys if k not in self.index))

    def write_shard(self, prefix: str, keys: list[str], tensors: dict[str, torch.Tensor]) -> str:
        """Publish one shard (rows for ``keys``), then its record; returns its name."""
        name = f"shard-{prefix}-{uuid.uuid4().hex[:12]}"
        file = self.folder / f"{name}.safetensors"
        tensors = {k: v.contiguous() for k, v in tensors.items()}
        save_tensors(tensors, file)
        values = tensors["latents"]
        record = {"keys": keys, "bytes": file.stat().st_size, "shape": list(values.shape),
                  "dtype": str(values.dtype).replace("torch.", ""), "sha256": file_sha256(file),
                  "finite": bool(torch.isfinite(values).all())}
        write_text(self.folder / f"{name}.json", json.dumps(record))
        _VERIFIED.add((str(file), record["bytes"], file.stat().st_mtime_ns))  # hashed just now
        self.records[name] = record
        for row, key in enumerate(keys):
            self.index.setdefault(key, (name, row))
        return name

    def sweep(self, prefix: str) -> None:
        """Remove what a killed writer with this prefix left: shards without records, temp files.
        Call only while holding that writer's lock."""
        for f in self.folder.glob(f"shard-{prefix}-*.safetensors"):
            if not f.with_suffix(".json").exists():
                f.unlink(missing_ok=True)
        for f in self.folder.glob(f".shard-{prefix}-*.tmp"):
            f.unlink(missing_ok=True)

    def drop(self, name: str) -> None:
        """Forget a damaged shard (record first, so no reader trusts the file); its rows become missing."""
        (self.folder / f"{name}.json").unlink(missing_ok=True)
        (self.folder / f"{name}.safetensors").unlink(missing_ok=True)
        self.records.pop(name, None)
        self.index = {}  # rebuilt: another shard may hold some of the same rows
        for other, record in self.records.items():
            for row, key in enumerate(record["keys"]):
                self.index.setdefault(key, (other, row))

    def check(self, name: str, verify_hash: bool = True) -> str | None:
        """Why shard ``name`` cannot be used (missing, truncated, altered), or None."""
        record, file = self.records[name], self.folder / f"{name}.safetensors"
        if not file.exists():
            return f"{file.name} is missing"
        size = file.stat().st_size
        if size != record["bytes"]:
            return f"{file.name} is {size} bytes, not {record['bytes']} (truncated)"
        stamp = (str(file), size, file.stat().st_mtime_ns)
        if verify_hash and stamp not in _VERIFIED:
            if file_sha256(file) != record["sha256"]:
                return f"{file.name} does not match its recorded hash"
            _VERIFIED.add(stamp)
        return None

    def table(self, keys: list[str], tokens: bool, verify_hash: bool = True) -> tuple[LatentTable | None, list[str]]:
        """The mapped table of ``keys`` (all present), or None and the problems of the shards it needs
        (those shards are dropped, so their rows are missing again). A non-finite shard raises DataError."""
        names = list(dict.fromkeys(self.index[k][0] for k in keys))
        problems = []
        for name in names:
            problem = self.check(name, verify_hash)
            if problem is not None:
                problems.append(problem)
                self.drop(name)
        if problems:
            return None, problems
        for name in names:
            if not self.records[name]["finite"]:
                raise DataError(f"Latent store {self.folder}: {name}.safetensors holds NaN/Inf latents (the frozen "
                                "encoder gave non-finite outputs for some inputs); check the data and the encoder's "
                                "precision, then delete that shard and its .json record.")
        position = {name: i for i, name in enumerate(names)}
        shards = []
        for name in names:
            try:
                shards.append(mapped_tensors(self.folder / f"{name}.safetensors"))
            except (OSError, ValueError, KeyError, struct.error) as exc:
                self.drop(name)
                return None, [f"{name}.safetensors is unreadable ({exc})"]
        shard_of = np.fromiter((position[self.index[k][0]] for k in keys), np.int32, len(keys))
        row_of = np.fromiter((self.index[k][1] for k in keys), np.int64, len(keys))
        return LatentTable(shards, shard_of, row_of, tokens), []
