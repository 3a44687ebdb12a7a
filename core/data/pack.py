"""`fuse data pack`: a JSONL manifest as tar shards, so any dataset trains from either form.

Record ``i`` becomes key ``{i:09d}`` (a record listing several files of one field becomes one key
per file, ``{i:09d}_{j}``, each with all of its other values: the same pairs). Each file value is
copied byte for byte as ``KEY.<its extension>``; the inline fields (captions, ids) go to
``KEY.json`` as they are (lists included), and a ``text`` field also to ``KEY.txt`` (its first
caption, as img2dataset writes it). A file is packed only when its header is what its extension
says (``fuse.data.sniff``): a manifest cannot smuggle a text file into a shard. Shards are uncompressed (members must be seekable), written
atomically with fixed metadata, so packing the same manifest twice gives the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from fuse.base.atomic import atomic_path
from fuse.base.errors import DataError
from fuse.data.manifest import jsonl_records
from fuse.data.sniff import header_ok


def _records(manifest: Path) -> list[dict]:
    if not manifest.is_file():
        raise DataError(f"Manifest not found: {manifest}. Build it first (e.g. fuse data build emoji).")
    records = []
    for _, record in jsonl_records(manifest):
        records.append(record)
    if not records:
        raise DataError(f"Manifest is empty: {manifest}; nothing to pack.")
    return records


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def file_fields(records: list[dict], base: Path) -> list[str]:
    """Fields whose every value is a path of an existing file (relative to the manifest)."""
    fields = dict.fromkeys(k for r in records for k in r)
    return [f for f in fields if all(isinstance(v, str) and v and (base / v).is_file()
                                     for r in records if f in r for v in _as_list(r[f]))]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def _members(i: int, record: dict, files: list[str], base: Path,
             where: str) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """The keys of one record and their (member name suffix, bytes)."""
    inline = {k: v for k, v in record.items() if k not in files}
    listed = [f for f in files if f in record and isinstance(record[f], list) and len(record[f]) > 1]
    if len(listed) > 1:
        raise DataError(f"{where}: lists several files in both {listed[0]} and {listed[1]}; a shard key holds one "
                        "file per field. Split the record into one record per file.")
    spread = listed[0] if listed else None
    keys = []
    for j, chosen in enumerate(_as_list(record[spread]) if spread else [None]):
        out, exts = [], {}
        for f in files:
            if f not in record:
                continue
            path = base / (chosen if f == spread else _as_list(record[f])[0])
            ext = path.suffix.lower().lstrip(".")
            if not ext or ext in ("json", "txt"):
                raise DataError(f"{where}: {f} file {path.name} needs a media extension (.jpg, .png, .flac, ...) "
                                "to become a shard member.")
            if ext in exts:
                raise DataError(f"{where}: fields {exts[ext]} and {f} are both .{ext} files; one key can hold only "
                                "one member per extension.")
            exts[ext] = f
            data = path.read_bytes()  # read once, as packing does anyway: the check costs no extra I/O
            if not header_ok(data, ext):
                raise DataError(f"{where}: {f} file {path} is not a .{ext} file (its first bytes say otherwise), so it "
                                "is not packed; fix the manifest or the file.")
            out.append((ext, data))
        if "text" in inline and isinstance(_as_list(inline["text"])[0], str):
            out.append(("txt", _as_list(inline["text"])[0].encode("utf-8")))
        out.append(("json", json.dumps(inline, ensure_ascii=False).encode("utf-8")))
        keys.append((f"{i:09d}" if spread is None else f"{i:09d}_{j}", out))
    return keys


def pack_manifest(manifest: str | Path, out_dir: str | Path, shard_size: int, files: list[str] | None = None,
                  force: bool = False) -> list[Path]:
    """Write ``manifest``'s records as shards of ``shard_size`` keys into ``out_dir``; returns their paths."""
    if shard_size < 1:
        raise DataError(f"--shard-size must be at least 1, got {shard_size}.")
    manifest, out_dir = Path(manifest), Path(out_dir)
    records, base = _records(manifest), manifest.parent.resolve()
    files = file_fields(records, base) if files is None else files
    keys = [k for i, r in enumerate(records, 1) for k in _members(i - 1, r, files, base, f"{manifest}:{i}")]
    n = -(-len(keys) // shard_size)
    paths = [out_dir / f"{manifest.stem}-{s:06d}.tar" for s in range(n)]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise DataError(f"{existing[0]} exists; give another OUT_DIR or --force to overwrite.")
    out_dir.mkdir(parents=True, exist_ok=True)
    for s, path in enumerate(paths):
        with atomic_path(path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for key, members in keys[s * shard_size:(s + 1) * shard_size]:
                for ext, data in members:
                    _add(tar, f"{key}.{ext}", data)
    return paths


def brace_pattern(paths: list[Path]) -> str:
    """The data.train pattern naming ``paths`` (as pack_manifest writes them)."""
    if len(paths) == 1:
        return str(paths[0])
    first, last = paths[0].stem.rsplit("-", 1), paths[-1].stem.rsplit("-", 1)
    return str(paths[0].parent / f"{first[0]}-{{{first[1]}..{last[1]}}}.tar")
