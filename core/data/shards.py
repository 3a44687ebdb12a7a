"""Tar shards (the WebDataset / img2dataset layout) as a data source, read by random access.

    data: {train: "shards/train-{000000..000009}.tar", val: shards/val-000000.tar}

A shard holds members ``KEY.EXT``: one key per record, one member per modality (``KEY.jpg``,
``KEY.txt``, ``KEY.flac``; inline values may also sit in ``KEY.json`` under the modality's name,
which is how a caption list survives packing). An uncompressed tar member is contiguous bytes,
so a shard set is indexed once (a scan of the tar headers: key -> member offset and size, kept
as JSON in the cache folder under the shard's path, size and mtime) and each file value becomes
a reference ``SHARD.tar#OFFSET:SIZE:MEMBER`` that input kinds open by seek (``open_value``).
Everything else stays as it is for manifests: the pair index is the shard set's keys, batches are
drawn by step (any number of DataLoader workers, ranks split without duplicates, exact resume),
frozen towers encode each value once into the latent cache, online towers read members each
epoch. No streaming library is needed for that, so fuse does not depend on ``webdataset``.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from fuse.base.atomic import write_text
from fuse.base.errors import DataError
from fuse.data.manifest import PairCollector, PairedData

INDEX_VERSION = 1


@dataclass(frozen=True)
class ShardSet:
    """The shard files a data.train / data.val entry names, in order."""

    spec: str
    paths: tuple[Path, ...]

    def __str__(self) -> str:
        return self.spec


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> a-000.tar, a-001.tar, a-002.tar (zero padding kept); ``{x,y}`` -> x, y."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        return [pattern]
    head, tail, body = pattern[:m.start()], pattern[m.end():], m.group(1)
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if span:
        lo, hi = span.groups()
        width = len(lo) if lo.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        items = body.split(",")
    return [out for item in items for out in expand_braces(head + item + tail)]


def shard_set(spec: str | list[str], base: Path | None = None) -> ShardSet | None:
    """The shards ``spec`` names (a brace pattern or a list of them), or None when it names a manifest."""
    patterns = [spec] if isinstance(spec, str) else list(spec)
    paths = [p for pattern in patterns for p in expand_braces(pattern)]
    if any(p.endswith((".tar.gz", ".tgz", ".tar.zst", ".tar.bz2", ".tar.xz")) for p in paths):
        raise DataError(f"{spec}: compressed tar shards cannot be read by seek; unpack them to .tar (media "
                        "files are compressed already, so a .tar is barely larger).")
    if not paths or not all(p.endswith(".tar") for p in paths):
        if isinstance(spec, list):
            raise DataError(f"{spec}: a list names tar shards (*.tar); give one manifest as a single path.")
        return None
    root = Path(base) if base is not None else Path.cwd()
    return ShardSet(spec if isinstance(spec, str) else ", ".join(spec),
                    tuple((root / Path(p).expanduser()).resolve() for p in paths))


def _scan(shard: Path) -> dict[str, dict[str, list[int]]]:
    """key -> ext -> [data offset, size] from the tar headers; a truncated tar is an error naming it."""
    end = shard.stat().st_size
    members: dict[str, dict[str, list[int]]] = {}
    try:
        with tarfile.open(shard, "r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                if info.offset_data + info.size > end:
                    raise tarfile.ReadError(f"member {info.name} ends past the end of the file")
                folder, _, base = info.name.rpartition("/")
                key, dot, ext = base.partition(".")
                if dot and key:
                    members.setdefault(f"{folder}/{key}" if folder else key, {})[ext.lower()] = \
                        [info.offset_data, info.size]
            # A whole tar ends with two zero blocks; tarfile takes a file cut between members for the end.
            with open(shard, "rb") as f:
                f.seek(tar.offset)
                if f.read(1024) != bytes(1024):
                    raise tarfile.ReadError(f"no end-of-archive marker after byte {tar.offset}")
    except (tarfile.TarError, EOFError) as exc:
        raise DataError(f"Shard {shard} is truncated or not an uncompressed tar ({exc}). Copy it again or "
                        "re-pack it (fuse data pack); .tar.gz shards are not supported.") from None
    if not members:
        raise DataError(f"Shard {shard} holds no KEY.EXT members; it is empty or not a WebDataset shard.")
    return members


def index_shard(shard: Path, cache_dir: Path | None) -> dict[str, dict[str, list[int]]]:
    """A shard's member index, from the cache when the shard is unchanged (path, size, mtime)."""
    if not shard.is_file():
        raise DataError(f"Shard not found: {shard}. Fix data.train/data.val, or pack one with fuse data pack.")
    st = shard.stat()
    key = hashlib.sha256(f"{INDEX_VERSION}|{shard}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:24]
    cached = Path(cache_dir) / "shard-index" / f"{key}.json" if cache_dir is not None else None
    if cached is not None and cached.exists():
        try:
            return json.loads(cached.read_text())
        except ValueError:
            pass  # a damaged index is simply rebuilt
    members = _scan(shard)
    if cached is not None:
        write_text(cached, json.dumps(members))
    return members


def _read(f, where: list[int]) -> bytes:
    f.seek(where[0])
    return f.read(where[1])


def load_shard_pairs(shards: ShardSet, modalities: tuple[str, str], kinds: dict, cache_dir: Path | None,
                     skip_incomplete: bool = False) -> PairedData:
    """The pairs of a shard set, as ``load_pairs`` gives them for a manifest with the same records.

    ``kinds`` maps each modality to its InputKind: a file kind takes the member whose extension it
    lists (``extensions``); an inline kind takes ``KEY.json``'s field of the modality's name, or
    else such a member's UTF-8 text. A key with one modality but not the other is an error
    naming shard and key, or, with ``skip_incomplete`` (data.bad_media: skip), left out."""
    collector = PairCollector(modalities)
    digest = hashlib.sha256()
    skipped = []
    for shard in shards.paths:
        members = index_shard(shard, cache_dir)
        digest.update(f"{shard}|{json.dumps(members, sort_keys=True)}".encode())
        with open(shard, "rb") as f:
            for key, exts in members.items():
                items, meta = {}, None
                for m in modalities:
                    kind = kinds[m]
                    ext = next((e for e in (*kind.extensions, m) if e in exts), None)
                    if kind.files:
                        if ext is not None:
                            off, size = exts[ext]
                            items[m] = [f"{shard}#{off}:{size}:{key}.{ext}"]
                        continue
                    if meta is None and "json" in exts:
                        try:
                            meta = json.loads(_read(f, exts["json"]))
                        except ValueError as exc:
                            raise DataError(f"Shard {shard}: {key}.json is not valid JSON ({exc}).") from None
                    value = meta.get(m) if isinstance(meta, dict) else None
                    if value is None and ext is not None:
                        value = _read(f, exts[ext]).decode("utf-8", errors="replace")
                    if value is not None:
                        items[m] = value if isinstance(value, list) else [value]
                        if not items[m] or not all(isinstance(v, str) and v for v in items[m]):
                            raise DataError(f"Shard {shard}: {key}: '{m}' must be a non-empty string or list of "
                                            "strings.")
                if len(items) == 2:
                    collector.add(items)
                elif items:
                    have, lack = next(iter(items)), next(m for m in modalities if m not in items)
                    if not skip_incomplete:
                        want = ", ".join(f"{key}.{e}" for e in (*kinds[lack].extensions, lack))
                        raise DataError(f"Shard {shard}: key {key} has {have} but no {lack} (looked for {want}"
                                        f"{'' if kinds[lack].files else f' and {lack!r} in {key}.json'}). Re-pack "
                                        "the shard, or leave such keys out with data.bad_media: skip.")
                    skipped.append(f"{shard}#{key}")
    if skipped:
        print(f"{shards}: left out {len(skipped)} key(s) that lack {' or '.join(modalities)} (data.bad_media: skip), "
              f"e.g. {skipped[0]}")
    if collector.n_records == 0:
        raise DataError(f"{shards}: no key holds both {modalities[0]} and {modalities[1]} (members are named "
                        "KEY.EXT with the extensions of the input kinds, e.g. KEY.jpg + KEY.txt).")
    return collector.build(shards.paths[0], digest.hexdigest())


