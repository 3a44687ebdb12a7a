"""Content keys: a file's latent is stored under a digest of its bytes, not of where it lies.

The latent store used to key a file value by its path, size and mtime, so a copied cache, a moved
dataset or the same data mounted elsewhere was encoded again. A file value's key is now
``content|EXT|DIGEST`` (BLAKE2b-128 of the bytes; the extension too, since some readers pick the
format by it), so the same bytes are encoded once wherever they lie: a shard member, a loose file,
or a remote shard's member (whose digest its index holds; ``fuse.data.remote_shards``). Hashing
reads each file once per value list: the digests are kept beside the cache, keyed by the list's
path/size/mtime fingerprint, so an unchanged list is not read again. Inline values (text) are
keyed by themselves, as before. A store written before keeps working: ``legacy_aliases`` maps
the new keys of values it holds under their old path keys.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fuse.base.atomic import write_text
from fuse.base.inputs import InputKind
from fuse.base.owned import grant
from fuse.base.shard_refs import split_ref
from fuse.data.remote_shards import member_digest
from fuse.data.store import LatentStore, value_key

MEMO_VERSION = 1


def by_content(kind: InputKind) -> bool:
    """Whether ``kind``'s values are keyed by their bytes: files whose kind keeps the default identity
    (a plugin that defines its own ``identity`` keeps its own keys)."""
    return kind.files and type(kind).identity is InputKind.identity


def file_digest(value: str) -> tuple[str, str]:
    """(extension, BLAKE2b-128 of the bytes) of a file or local shard member."""
    h = hashlib.blake2b(digest_size=16)
    ref = split_ref(value)
    if ref is not None:
        shard, offset, size, member = ref
        with open(shard, "rb") as f:
            f.seek(offset)
            h.update(f.read(size))
        name = member
    else:
        with open(value, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        name = value
    return os.path.splitext(name)[1].lower().lstrip("."), h.hexdigest()


def _key(ext: str, digest: str) -> str:
    return value_key(f"content|{ext}|{digest}")


def _local_digests(kind: InputKind, values: list[str], cache_dir: Path) -> list[list[str]]:
    """The digests of local file values, from the memo when this list (paths, sizes, mtimes) was hashed."""
    fingerprint = hashlib.sha256()
    for v in values:
        fingerprint.update(kind.identity(v).encode() + b"\n")
    memo = Path(cache_dir) / "content-digests" / f"{fingerprint.hexdigest()[:24]}.json"
    try:
        found = json.loads(memo.read_text())
        if found.get("version") == MEMO_VERSION and len(found["digests"]) == len(values):
            return found["digests"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or damaged: hash again
    digests = [list(file_digest(v)) for v in values]
    write_text(grant(memo), json.dumps({"version": MEMO_VERSION, "digests": digests}))  # the cache is fuse's
    return digests


def content_keys(kind: InputKind, values: list[str], cache_dir: Path) -> list[str]:
    """The latent-store key of each value: by content for files (see the module), else by identity."""
    if not by_content(kind):
        return [value_key(kind.identity(v)) for v in values]
    keys: list[str | None] = [None] * len(values)
    local = []
    for i, v in enumerate(values):
        remote = member_digest(v)
        if remote is None:
            local.append(i)
        else:
            keys[i] = _key(*remote)
    for i, (ext, digest) in zip(local, _local_digests(kind, [values[i] for i in local], cache_dir)):
        keys[i] = _key(ext, digest)
    return keys


def legacy_aliases(store: LatentStore, kind: InputKind, values: dict[str, str]) -> dict[str, str]:
    """{content key: path key} for ``values`` (content key -> value) that a store written before content
    keys holds under their path/size/mtime key."""
    if not by_content(kind) or not store.records:  # a new store has nothing to migrate
        return {}
    out = {}
    for key, value in values.items():
        if member_digest(value) is None:
            old = value_key(kind.identity(value))
            if old in store.index:
                out[key] = old
    return out
