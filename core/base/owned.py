"""Folders fuse owns, and one process per folder.

fuse writes into a folder only when it can prove the folder is its own: it was absent or empty
when fuse came, and fuse then wrote a small marker file first (``.fuse-owned.json``: what the
folder is, when, on which host, by which process, and a random id). A folder with files but no
marker is the user's, whatever the file names inside, and fuse refuses it before writing anything.

``exclusive(path)`` is the per-folder lock for work that must not run twice at once (a training
run, a resume, an export of a run, an index update): an ``fcntl`` lock on ``.<name>.lock`` beside
the folder (beside, so the lock guards the path even while the folder is moved aside or not yet
made) holding ``pid host`` of its holder. A second process is refused with one line naming them.
The kernel drops the lock when its holder dies (kill -9 included), so a stale lock file (a dead
pid in it) is simply taken over by the next process, which writes its own pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

from fuse.base.atomic import TEMP_TAG, open_lock_file, storage_error, write_text
from fuse.base.errors import FuseError, StorageError

MARKER = ".fuse-owned.json"


class Busy(FuseError):
    """Another live process holds the folder's lock."""


def owner(folder: str | Path) -> dict | None:
    """The folder's marker (``{"kind": ..., "id": ...}``) when fuse made it, else None."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("kind"), str) else None


def mark(folder: str | Path, kind: str, **identity) -> dict:
    """Create ``folder`` (absent or empty) and write its marker first; returns the marker."""
    folder = Path(folder)
    data = {"kind": kind, "id": uuid.uuid4().hex, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(), "pid": os.getpid(), **identity}
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, folder) from None
    write_text(folder / MARKER, json.dumps(data, indent=2, default=str))
    return data


def contents(folder: Path) -> list[str]:
    """Names inside ``folder`` (sorted; [] when it is absent or empty)."""
    try:
        return sorted(p.name for p in folder.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise storage_error(exc, folder) from None


def listing(names: list[str]) -> str:
    """A short list of names for a one-line error."""
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def claimable(folder: str | Path, kind: str, what: str, legacy: Callable[[Path], bool] | None = None) -> str:
    """Whether ``folder`` may become (or already is) fuse's for ``kind``, writing nothing: "new" (absent
    or empty), "ours" (marked for ``kind``), "legacy" (``legacy(folder)`` recognises one fuse wrote
    before it wrote markers); a file or a non-empty folder that is not fuse's is refused. Commands
    call it before any work, so bad input leaves nothing half-written; ``what`` names the option."""
    folder = Path(folder)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise StorageError(f"{what} {folder} exists and is not a folder; choose a new folder.")
    names = contents(folder)
    if not names:
        return "new"
    found = owner(folder)
    if found is None and legacy is not None and legacy(folder):
        return "legacy"
    if found is None or found["kind"] != kind:
        raise StorageError(f"{what} {folder} is not empty ({listing(names)}) and is not a fuse {kind} folder, so fuse "
                           "will not write into it; choose a new or empty folder.")
    return "ours"


def claim(folder: str | Path, kind: str, what: str, legacy: Callable[[Path], bool] | None = None,
          **identity) -> bool:
    """Make ``folder`` fuse's for ``kind`` (see ``claimable``): marked when new or legacy; True when new."""
    state = claimable(folder, kind, what, legacy)
    if state != "ours":
        mark(Path(folder), kind, **identity)
    return state == "new"


def sweep_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files and folders a killed fuse process left in ``folder`` (fuse's names
    only: ``.<name>.fuse-tmp-*``); call only while holding the folder's lock."""
    import shutil

    gone = []
    for stale in folder.glob(f".*.{TEMP_TAG}*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        gone.append(stale)
    return gone


def move_aside(folder: Path) -> Path:
    """Rename ``folder`` to ``<folder>.old-<time>`` beside it (one atomic rename; nothing deleted)."""
    folder = Path(os.path.abspath(folder)) if not Path(folder).name else Path(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        aside = folder.with_name(f"{folder.name}.old-{stamp}" + (f"-{n}" if n else ""))
        if not aside.exists():
            try:
                os.rename(folder, aside)
            except OSError as exc:
                raise storage_error(exc, folder) from None
            return aside
    raise StorageError(f"Cannot move {folder} aside: too many {folder.name}.old-{stamp}* folders; remove some.")


def lock_file(folder: Path) -> Path:
    """The lock ``exclusive`` takes: hidden, beside the folder it guards (``.`` is named by its absolute path)."""
    folder = Path(os.path.abspath(folder))
    return folder.with_name(f".{folder.name}.lock")


def holder(folder: str | Path) -> str:
    """Who holds (or last held) the folder's lock, as written in its lock file."""
    try:
        text = lock_file(Path(folder)).read_text().split()
        return f"pid {text[0]} on host {text[1]}" if len(text) >= 2 else "another process"
    except OSError:
        return "another process"


@contextlib.contextmanager
def exclusive(folder: str | Path, what: str = "folder") -> Iterator[None]:
    """Hold the folder's lock for the block, or refuse at once (``Busy``) naming the live holder.
    A lock whose holder died is free: the kernel released it, and this process writes its pid."""
    folder = Path(folder)
    path = lock_file(folder)
    fd = open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"{what} {folder} is in use by {holder(folder)} (lock {path}); wait for it to finish or stop "
                       "it, or choose another folder.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with the next taker)
