"""The member index of one uncompressed tar shard, from its headers (stdlib ``tarfile``)."""

from __future__ import annotations

import tarfile
from pathlib import Path

from fuse.base.errors import DataError


def scan(shard: Path, name: str | None = None) -> dict[str, dict[str, list[int]]]:
    """key -> ext -> [data offset, size] from the tar headers; a truncated tar is an error naming it (or
    ``name``: the URL a spooled shard came from)."""
    name = name or str(shard)
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
        raise DataError(f"Shard {name} is truncated or not an uncompressed tar ({exc}). Copy it again or "
                        "re-pack it (fuse data pack); .tar.gz shards are not supported.") from None
    if not members:
        raise DataError(f"Shard {name} holds no KEY.EXT members; it is empty or not a WebDataset shard.")
    return members
