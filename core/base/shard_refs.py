"""How a manifest value names a member of a tar shard (``SHARD.tar#OFFSET:SIZE:MEMBER``), and opening
it like a file.

Input kinds read values through ``open_value`` (``fuse.open_value``), so a shard member reads like a
path; indexing shard sets is ``fuse.data.shards``'.
"""

from __future__ import annotations

import io
import os
import re

from fuse.base.errors import DataError

REF = re.compile(r"^(?P<shard>.+\.tar)#(?P<offset>\d+):(?P<size>\d+):(?P<member>.+)$")


def split_ref(value: str) -> tuple[str, int, int, str] | None:
    """(shard, offset, size, member) of a shard reference; None for a plain path."""
    m = REF.match(value)
    if m is None or not os.path.isfile(m["shard"]):
        return None
    return m["shard"], int(m["offset"]), int(m["size"]), m["member"]


def open_value(value: str):
    """What a reader opens for a file value: the path itself, or, for a shard reference, a file
    object holding the member's bytes (PIL, soundfile and friends read either)."""
    ref = split_ref(value)
    if ref is None:
        return value
    shard, offset, size, member = ref
    with open(shard, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise DataError(f"Shard {shard} is truncated: member {member} is cut short. Copy the shard again.")
    buf = io.BytesIO(data)
    buf.name = member  # readers that guess the format from a name see the member's extension
    return buf
