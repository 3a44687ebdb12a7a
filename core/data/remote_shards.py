"""Remote tar shards: each read whole into a spool file, one at a time, and never kept.

Indexing a shard (``indexed_remote``) keeps what the pair tables need (the member index, the
inline members' text, a digest of every member's bytes, the shard's identity) as JSON under
``<cache_dir>/remote-index/``, and hands the spooled copy to its caller, which may encode the
shard's members from it (training does, so a first run reads each shard once). Members still
without latents later are read by ``staged``, which checks that the shard is the one indexed.
Once both are done a run reads nothing remote. Values of file members are references
``URL#OFFSET:SIZE:MEMBER`` with the URL redacted; the real URL stays in this process's memory.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from fuse.base.atomic import locked, write_text
from fuse.base.errors import DataError
from fuse.base.owned import grant
from fuse.base.urls import redact
from fuse.data.fetch import FetchFailed, FetchOptions, fetched, sweep_spool
from fuse.data.tar_index import scan

INDEX_VERSION = 1
TEXT_EXTS = ("json", "txt")
_REF = re.compile(r"^(?P<name>.+?)#(?P<rest>(?P<offset>\d+):(?P<size>\d+):(?P<member>.+))$")


@dataclass
class RemoteShard:
    """What indexing learnt about one remote shard. ``members``: key -> ext -> [offset, size, digest];
    ``text``: key -> ext -> the inline members' text. ``url`` is the real URL (never written)."""

    url: str
    name: str
    identity: dict
    members: dict[str, dict[str, list]]
    text: dict[str, dict[str, str]]
    options: FetchOptions
    spool: Path
    index_file: Path


_SHARDS: dict[str, RemoteShard] = {}  # redacted URL -> its index, for content keys and encoding


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _read_index(path: Path, text_exts: set[str]) -> dict | None:
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # absent or damaged: read the shard again
    if index.get("version") != INDEX_VERSION or not text_exts <= set(index.get("text_exts", [])):
        return None
    return index


def _index_spooled(path: Path, name: str, identity: dict, text_exts: set[str]) -> dict:
    members = scan(path, name)
    text: dict[str, dict[str, str]] = {}
    with open(path, "rb") as f:
        for key, exts in members.items():
            for ext, where in exts.items():
                f.seek(where[0])
                data = f.read(where[1])
                where.append(_digest(data))
                if ext in text_exts:
                    text.setdefault(key, {})[ext] = data.decode("utf-8", errors="replace")
    return {"version": INDEX_VERSION, "url": name, "identity": identity, "text_exts": sorted(text_exts),
            "members": members, "text": text}


def spool_dir(cache_dir: Path) -> Path:
    """Where shards are read to: one at a time per process (the bounded temporary space)."""
    spool = grant(Path(cache_dir) / "remote-spool")  # the cache is fuse's
    if spool.is_dir():
        sweep_spool(spool)  # what a killed process left (a glob of a folder of a few files)
    return spool


@contextmanager
def indexed_remote(url: str, cache_dir: Path, options: FetchOptions,
                   text_exts: set[str]) -> Iterator[tuple[RemoteShard | None, Path | None]]:
    """The index of the shard at ``url`` (read once, then from the cache), and, when it was read just
    now, the spooled copy (deleted on exit: a caller may encode from it, so a first run reads each
    shard once). The shard is None when it cannot be read and ``options.on_error`` is "skip"."""
    name = redact(url)
    index_file = grant(Path(cache_dir) / "remote-index" / f"{hashlib.sha256(name.encode()).hexdigest()[:24]}.json")
    text_exts = set(text_exts) | set(TEXT_EXTS)
    index = _read_index(index_file, text_exts)
    if index is not None:
        yield _register(url, name, index, options, cache_dir, index_file), None
        return
    index_file.parent.mkdir(parents=True, exist_ok=True)
    with locked(index_file):  # ranks that start together: one reads the shard, the others wait for its index
        index = _read_index(index_file, text_exts)
        if index is not None:
            yield _register(url, name, index, options, cache_dir, index_file), None
            return
        read = False
        try:
            with fetched(url, spool_dir(cache_dir), options) as (path, identity):
                read = True
                index = _index_spooled(path, name, identity, text_exts)
                write_text(index_file, json.dumps(index))
                yield _register(url, name, index, options, cache_dir, index_file), path
        except FetchFailed as exc:
            if read or options.on_error != "skip":
                raise
            print(f"skipped: {exc}")
            yield None, None


def _register(url: str, name: str, index: dict, options: FetchOptions, cache_dir: Path,
              index_file: Path) -> RemoteShard:
    shard = RemoteShard(url, name, index["identity"], index["members"], index["text"], options,
                        spool_dir(cache_dir), index_file)
    _SHARDS[name] = shard
    return shard


def split_remote(value: str) -> tuple[RemoteShard, str] | None:
    """(the shard, ``OFFSET:SIZE:MEMBER``) of a remote member reference; None for anything else."""
    m = _REF.match(value)
    if m is None or m["name"] not in _SHARDS:
        return None
    return _SHARDS[m["name"]], m["rest"]


def member_digest(value: str) -> tuple[str, str] | None:
    """(extension, digest of the bytes) of a remote member, from its index; None for other values."""
    found = split_remote(value)
    if found is None:
        return None
    shard, rest = found
    key, _, ext = rest.split(":", 2)[2].rpartition(".")
    return ext, shard.members[key][ext][2]


def _changed(old: dict, new: dict) -> str | None:
    for field in ("bytes", "etag", "sha256"):
        if old.get(field) is not None and new.get(field) is not None and old[field] != new[field]:
            return f"{field} {old[field]} -> {new[field]}"
    return None


def staged(values: list[str], keys: list[str]) -> Iterator[tuple[list[str], list[str]]]:
    """``values`` (with their ``keys``) in runs: local values as they are, each remote shard's members as
    references into its spooled copy, read once and deleted after the run is consumed. A shard that
    is not the one indexed (size, ETag or hash differ) stops with DataError and forgets the index."""
    def owner(value: str) -> RemoteShard | None:
        found = split_remote(value)
        return found[0] if found else None

    i = 0
    while i < len(values):
        shard, j = owner(values[i]), i + 1
        while j < len(values) and owner(values[j]) is shard:
            j += 1
        if shard is None:
            yield values[i:j], keys[i:j]
        else:
            with fetched(shard.url, shard.spool, replace(shard.options, on_error="stop")) as (path, identity):
                change = _changed(shard.identity, identity)
                if change:
                    shard.index_file.unlink(missing_ok=True)
                    raise DataError(f"Shard {shard.name} changed since fuse indexed it ({change}): its members no "
                                    "longer match the pairs read from it, so none of them is encoded. Run again to "
                                    "index the new version (latents of unchanged members are kept).")
                yield [f"{path}#{split_remote(v)[1]}" for v in values[i:j]], keys[i:j]
        i = j
