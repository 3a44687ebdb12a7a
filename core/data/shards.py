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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from fuse.base.atomic import write_text
from fuse.base.errors import DataError
from fuse.base.urls import check_url, is_pipe, is_remote, redact, redact_source
from fuse.data.fetch import FetchOptions
from fuse.data.manifest import PairCollector, PairedData
from fuse.data.remote_shards import indexed_remote
from fuse.data.tar_index import scan

INDEX_VERSION = 1


@dataclass(frozen=True)
class ShardSet:
    """The shards a data.train / data.val entry names, in order: local paths, or (remote) URLs and
    ``pipe:`` commands as given (``spec`` is printable: its URLs are redacted)."""

    spec: str
    paths: tuple[Path | str, ...]

    def __str__(self) -> str:
        return self.spec

    @property
    def remote(self) -> list[str]:
        return [p for p in self.paths if isinstance(p, str)]


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> a-000.tar, a-001.tar, a-002.tar (zero padding kept); ``{x,y}`` -> x, y."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if m is None:
        if "{" in pattern or "}" in pattern:
            raise DataError(f"{redact(pattern)}: malformed brace pattern (unbalanced {{ or }}); write "
                            "a-{000..009}.tar or a-{x,y}.tar.")
        return [pattern]
    head, tail, body = pattern[:m.start()], pattern[m.end():], m.group(1)
    span = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if span:
        lo, hi = span.groups()
        if int(lo) > int(hi):
            raise DataError(f"{redact(pattern)}: brace range {{{body}}} runs backwards; write {{{hi}..{lo}}}.")
        width = len(lo) if lo.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    elif ".." in body or not body:
        raise DataError(f"{redact(pattern)}: malformed brace range {{{body}}}; a range is two whole numbers, "
                        "e.g. {000..009}, and a choice lists items, e.g. {x,y}.")
    else:
        items = body.split(",")
    return [out for item in items for out in expand_braces(head + item + tail)]


def _is_tar(p: str) -> bool:
    return (redact(p) if is_remote(p) else p).endswith(".tar") or is_pipe(p)


def shard_set(spec: str | list[str], base: Path | None = None) -> ShardSet | None:
    """The shards ``spec`` names (a brace pattern or a list of them, local or remote), or None when it
    names a manifest."""
    patterns = [spec] if isinstance(spec, str) else list(spec)
    paths = [p for pattern in patterns for p in expand_braces(pattern)]
    printable = redact_source(spec)
    if any((redact(p) if is_remote(p) else p).endswith((".tar.gz", ".tgz", ".tar.zst", ".tar.bz2", ".tar.xz"))
           for p in paths):
        raise DataError(f"{printable}: compressed tar shards cannot be read by seek; unpack them to .tar (media "
                        "files are compressed already, so a .tar is barely larger).")
    if not paths or not all(_is_tar(p) for p in paths):
        if isinstance(spec, list) or any(is_remote(p) for p in paths):
            raise DataError(f"{printable}: a list or URL names tar shards (*.tar); give one manifest as a single "
                            "local path.")
        return None
    for p in paths:
        if is_remote(p):
            check_url(p)
    root = Path(base) if base is not None else Path.cwd()
    return ShardSet(printable if isinstance(spec, str) else ", ".join(printable),
                    tuple(p if is_remote(p) else (root / Path(p).expanduser()).resolve() for p in paths))


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
    members = scan(shard)
    if cached is not None:
        write_text(cached, json.dumps(members))
    return members


def _read(f, where: list[int]) -> bytes:
    f.seek(where[0])
    return f.read(where[1])


def _packed_records(keyed: list[tuple[str, dict]], files: list[str]) -> list[dict]:
    """Join the keys ``fuse data pack`` split one record into (``NNNNNNNNN_0``, ``_1``, ...: one file each,
    the same captions) back into that record, so its captions stay one item each, as in the manifest."""
    records, last = [], None
    for key, items in keyed:
        spread = re.fullmatch(r"(\d{9})_\d+", key)
        if spread and spread.group(1) == last:
            for m in files:
                records[-1][m] = records[-1][m] + items[m]
            continue
        last = spread.group(1) if spread else None
        records.append(items)
    return records
def _opened(shards: ShardSet, cache_dir: Path | None, text_exts: set[str], fetch: FetchOptions | None,
            skipped: list[str]) -> Iterator[tuple[str, dict, Callable[[list[int]], bytes], Path | None]]:
    """Each shard's (name, members: key -> ext -> [offset, size, ...], read(where) -> bytes of a
    member that may be read inline, the spooled copy of a remote shard read just now or None). A
    remote shard that cannot be read is skipped (``fetch.on_error``) and named in ``skipped``."""
    for shard in shards.paths:
        if isinstance(shard, Path):
            members = index_shard(shard, cache_dir)
            with open(shard, "rb") as f:
                yield str(shard), members, lambda where, f=f: _read(f, where), None
            continue
        with indexed_remote(shard, cache_dir, fetch or FetchOptions(), text_exts) as (remote, spool):
            if remote is None:
                skipped.append(redact(shard))
                continue
            by_offset = {tuple(w[:2]): remote.text.get(k, {}).get(e) for k, exts in remote.members.items()
                         for e, w in exts.items()}
            yield remote.name, remote.members, lambda where, t=by_offset: (t[tuple(where[:2])] or "").encode(), spool


def _values(key: str, exts: dict, name: str, kinds: dict, modalities: tuple[str, str], read) -> dict[str, list]:
    """The values of one key, per modality it has."""
    items, meta = {}, None
    for m in modalities:
        kind = kinds[m]
        ext = next((e for e in (*kind.extensions, m) if e in exts), None)
        if kind.files:
            if ext is not None:
                off, size = exts[ext][:2]
                items[m] = [f"{name}#{off}:{size}:{key}.{ext}"]
            continue
        if meta is None and "json" in exts:
            try:
                meta = json.loads(read(exts["json"]))
            except ValueError as exc:
                raise DataError(f"Shard {name}: {key}.json is not valid JSON ({exc}).") from None
        value = meta.get(m) if isinstance(meta, dict) else None
        if value is None and ext is not None:
            value = read(exts[ext]).decode("utf-8", errors="replace")
        if value is not None:
            items[m] = value if isinstance(value, list) else [value]
            if not items[m] or not all(isinstance(v, str) and v for v in items[m]):
                raise DataError(f"Shard {name}: {key}: '{m}' must be a non-empty string or list of strings.")
    return items


def load_shard_pairs(shards: ShardSet, modalities: tuple[str, str], kinds: dict, cache_dir: Path | None,
                     skip_incomplete: bool = False, fetch: FetchOptions | None = None,
                     on_spooled: Callable[[dict[str, list[str]]], None] | None = None) -> PairedData:
    """The pairs of a shard set, as ``load_pairs`` gives them for a manifest with the same records.

    ``kinds`` maps each modality to its InputKind: a file kind takes the member whose extension it
    lists (``extensions``); an inline kind takes ``KEY.json``'s field of the modality's name, or
    else such a member's UTF-8 text. A key with one modality but not the other is an error
    naming shard and key, or, with ``skip_incomplete`` (data.bad_media: skip), left out. Remote
    shards are read as ``fetch`` says (``fuse.data.remote_shards``); while a remote shard read just
    now is spooled, ``on_spooled`` gets its paired file values ({modality: references into the spool})
    to encode them then, so that a first run need not read the shard again."""
    files = [m for m in modalities if kinds[m].files]
    collector = PairCollector(modalities, merged=tuple(files))
    digest = hashlib.sha256()
    skipped, lost, keyed = [], [], []
    text_exts = {e for m in modalities if not kinds[m].files for e in (*kinds[m].extensions, m)}
    for name, members, read, spool in _opened(shards, cache_dir, text_exts, fetch, lost):
        digest.update(f"{name}|{json.dumps(members, sort_keys=True)}".encode())
        fresh: dict[str, list[str]] = {m: [] for m in files}
        for key, exts in members.items():
            items = _values(key, exts, name, kinds, modalities, read)
            if len(items) == 2:
                keyed.append((key, items))
                for m in fresh:
                    fresh[m] += [str(spool) + v[len(name):] for v in items[m]]
            elif items:
                have, lack = next(iter(items)), next(m for m in modalities if m not in items)
                if not skip_incomplete:
                    want = ", ".join(f"{key}.{e}" for e in (*kinds[lack].extensions, lack))
                    raise DataError(f"Shard {name}: key {key} has {have} but no {lack} (looked for {want}"
                                    f"{'' if kinds[lack].files else f' and {lack!r} in {key}.json'}). Re-pack "
                                    "the shard, or leave such keys out with data.bad_media: skip.")
                skipped.append(f"{name}#{key}")
        if spool is not None and on_spooled is not None:
            on_spooled(fresh)  # a remote shard read just now: its members can be encoded from the spool
    if lost:
        print(f"{shards}: skipped {len(lost)} of {len(shards.paths)} shard(s) that could not be read "
              f"(data.remote.on_error: skip), e.g. {lost[0]}")
    for items in _packed_records(keyed, files):
        collector.add(items)
    if skipped:
        print(f"{shards}: left out {len(skipped)} key(s) that lack {' or '.join(modalities)} (data.bad_media: skip), "
              f"e.g. {skipped[0]}")
    if collector.n_records == 0:
        raise DataError(f"{shards}: no key holds both {modalities[0]} and {modalities[1]} (members are named "
                        "KEY.EXT with the extensions of the input kinds, e.g. KEY.jpg + KEY.txt).")
    first = shards.paths[0]
    return collector.build(first if isinstance(first, Path) else Path(redact(first)), digest.hexdigest())
