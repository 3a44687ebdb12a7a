"""Each exported file's size and sha256, recorded in fuse_model.json and checked before loading.

A truncated copy, a swapped head or an edited encoder config then fails with the file's name instead of
a shape error deep inside torch (or, worse, loading silently). Sizes are checked for every file;
hashes for files up to ``HASH_LIMIT`` (heads, configs, tokenizers), so that loading a large encoder
does not read its weights twice. ``verify_files(path, files, full=True)`` hashes everything.
"""

from __future__ import annotations

from pathlib import Path

from fuse.base.atomic import file_sha256
from fuse.base.errors import ModelFileError

HASH_LIMIT = 64 * 2**20


def record_files(root: Path, skip: tuple[str, ...]) -> dict[str, dict]:
    """{relative posix path: {"size", "sha256"}} of every file under ``root`` but the ``skip`` names."""
    return {p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).as_posix() not in skip}


def verify_files(root: Path, files: dict[str, dict], full: bool = False) -> None:
    """Every recorded file exists with its size (and hash, below HASH_LIMIT or with ``full``); one
    ModelFileError naming the first file that does not. A listed path must stay inside ``root``
    (no ``..``, no absolute path, no link out of it)."""
    inside = Path(root).resolve()
    for rel, rec in files.items():
        path = root / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts or not path.resolve().is_relative_to(inside):
            raise ModelFileError(f"{root / 'fuse_model.json'}: its files list names {rel}, outside the export; an "
                                 "export loads only files inside its folder. Re-export the model.")
        if not path.is_file():
            raise ModelFileError(f"{path} is missing from the export (fuse_model.json lists it); copy the whole "
                                 "folder again or re-export.")
        size = path.stat().st_size
        if size != rec["size"]:
            raise ModelFileError(f"{path} is {size} bytes but was exported as {rec['size']}: the file is truncated "
                                 "or was replaced; copy the whole folder again or re-export.")
        if (full or size <= HASH_LIMIT) and file_sha256(path) != rec["sha256"]:
            raise ModelFileError(f"{path} does not match its sha256 in fuse_model.json: the file was changed after "
                                 "export; copy the whole folder again or re-export.")
