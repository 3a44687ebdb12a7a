"""The one door for fuse's writes: folders and files fuse owns, and one process per folder.

fuse writes into a folder only when it can prove the folder is its own: it was absent or empty
when fuse came, and fuse then wrote a small marker file first (``.fuse-owned.json``: what the
folder is, when, on which host, by which process, a random id, and the folder's identity: its
device and inode). A marker proves ownership only in the folder it was written in (a copy of it
in another folder names another inode), or when the files it lists (``seal``: every file fuse
wrote there, with its size) are exactly what the folder holds. A folder with files but no proven
marker is the user's, whatever the file names inside, and fuse refuses it before writing anything.
Claiming is serialised (a lock beside the folder), so processes that start one sweep at once all
proceed. A single output file (``claim_file``) must be new or carry fuse's record beside it
(``.<name>.fuse-owned.json``: its size and sha256, written by ``sign``), and is never an input.

Every path a command may write is granted here (``granted``): the folders and files it claimed,
and the hidden temporaries, locks and records beside them. tests/test_write_door.py runs every
command under an audit hook that refuses any write this ledger does not grant.

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
from typing import Annotated, Callable, Iterator

from fuse.base.atomic import TEMP_TAG, absolute, file_sha256, grant, granted, locked, open_lock_file, storage_error, write_text  # noqa: F401 - grant, granted: the door's ledger
from fuse.base.errors import FuseError, StorageError

MARKER = ".fuse-owned.json"


class InsideRun:
    """Marks an Options field as a location inside the run folder (``fuse.RunPath``)."""


# A plugin option naming where it writes (a tracker's log folder, a file store URI): relative to the run
# folder, confined to it; a remote URI (http://, ...) is left alone. Core applies it (``inside``).
RunPath = Annotated[str, InsideRun()]


def inside(folder: str | Path, value: str, where: str) -> str:
    """``value`` (relative to ``folder``, absolute, or a file: URI) made absolute inside ``folder``; a path
    outside it is one StorageError line. Remote URIs pass unchanged."""
    from urllib.parse import unquote, urlparse

    uri = value.startswith("file:")
    if "://" in value and not uri:
        return value
    path = Path(unquote(urlparse(value).path)) if uri else Path(value).expanduser()
    root = os.path.realpath(folder)
    target = os.path.realpath(os.path.join(root, path))
    if target != root and not target.startswith(root + os.sep):
        raise StorageError(f"{where}: {value} is outside the run folder {folder}; a tracker writes only inside its "
                           "run (give a path relative to output_dir, e.g. tensorboard).")
    grant(target)
    return Path(target).as_uri() if uri else target


class Busy(FuseError):
    """Another live process holds the folder's lock."""


def _identity(folder: Path) -> dict:
    st = os.stat(folder)
    return {"dev": st.st_dev, "ino": st.st_ino}


def _files(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` (relative path -> size), fuse's own hidden bookkeeping left out."""
    found = {}
    for dirpath, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if TEMP_TAG not in d]
        for f in files:
            if f == MARKER or f.endswith(".lock") or TEMP_TAG in f:
                continue
            path = Path(dirpath) / f
            found[path.relative_to(folder).as_posix()] = path.lstat().st_size
    return found


def proven(folder: Path, data: dict) -> bool:
    """Whether the marker ``data`` was written for this very folder (its device and inode), or the
    files it lists are exactly the folder's: a marker copied into someone's folder proves nothing."""
    try:
        if data.get("folder") == _identity(folder):
            return True
    except OSError:
        return False
    files = data.get("files")
    return isinstance(files, dict) and bool(files) and _files(folder) == files


def owner(folder: str | Path) -> dict | None:
    """The folder's marker (``{"kind": ..., "id": ...}``) when fuse made it (``proven``), else None."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("kind"), str)
    return data if ok and proven(Path(folder), data) else None


def mark(folder: str | Path, kind: str, **identity) -> dict:
    """Create ``folder`` (absent or empty) and write its marker first; returns the marker."""
    folder = Path(folder)
    grant(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        here = _identity(folder)
    except OSError as exc:
        raise storage_error(exc, folder) from None
    data = {"kind": kind, "id": uuid.uuid4().hex, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "host": socket.gethostname(), "pid": os.getpid(), **identity, "folder": here}
    write_text(folder / MARKER, json.dumps(data, indent=2, default=str))
    return data


def seal(folder: str | Path) -> None:
    """Record in the folder's marker every file fuse wrote there, with its size, and the folder's
    identity: a copy of the whole folder elsewhere is then proven fuse's too. Call when a command is done."""
    folder = Path(folder)
    data = owner(folder)
    if data is None:
        return
    data.update(folder=_identity(folder), files=_files(folder))
    write_text(folder / MARKER, json.dumps(data, indent=2, default=str))


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
    or empty), "ours" (a proven marker of ``kind``), "legacy" (``legacy(folder)`` recognises one fuse wrote
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
        copied = " (its .fuse-owned.json was written for another folder)" if found is None and MARKER in names else ""
        raise StorageError(f"{what} {folder} is not empty ({listing(names)}) and is not a fuse {kind} folder{copied}, "
                           "so fuse will not write into it; choose a new or empty folder.")
    return "ours"


def claim(folder: str | Path, kind: str, what: str, legacy: Callable[[Path], bool] | None = None,
          **identity) -> bool:
    """Make ``folder`` fuse's for ``kind`` (see ``claimable``): marked when new or legacy; True when new.
    Claims of one folder are serialised, so processes starting together (a SLURM array) all proceed."""
    folder = Path(folder)
    with locked(grant(folder.with_name(f"{folder.name}.claim"))):
        state = claimable(folder, kind, what, legacy)
        if state != "ours":
            mark(folder, kind, **identity)
        elif owner(folder).get("folder") != _identity(folder):
            seal(folder)  # a copied fuse folder (proven by its files): the marker now names this one
    grant(folder)
    return state == "new"


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return absolute(a) == absolute(b)


def record_of(path: Path) -> Path:
    """Where ``sign`` keeps a single output file's record: hidden, beside it."""
    return path.with_name(f".{path.name}.fuse-owned.json")


def signed(path: Path, kind: str) -> bool:
    """Whether ``path`` is the very file fuse wrote for ``kind`` (its record's size and sha256 match)."""
    try:
        data = json.loads(record_of(path).read_text())
        return (isinstance(data, dict) and data.get("kind") == kind and data.get("size") == path.stat().st_size
                and data.get("sha256") == file_sha256(path))
    except (OSError, ValueError):
        return False


def claim_file(path: str | Path, kind: str, what: str, inputs: tuple = (),
               legacy: Callable[[Path], bool] | None = None) -> Path:
    """Claim one output file before any work: never one of ``inputs``; new, or one fuse wrote for ``kind``
    (``signed``, or recognised by ``legacy``); anything else is the user's and refused in one line."""
    path = Path(path)
    for source in inputs:
        if source is not None and _same(path, Path(source)):
            raise StorageError(f"{what} {path} is also an input ({source}); fuse never writes over its input; "
                               "choose another file name.")
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise StorageError(f"{what} {path} exists and is not a file; choose a new file name.")
    if path.exists() and not signed(path, kind) and not (legacy is not None and legacy(path)):
        raise StorageError(f"{what} {path} exists and fuse cannot prove it wrote it (no matching "
                           f"{record_of(path).name} beside it), so fuse will not replace it; choose a new file name.")
    return grant(path)


def sign(path: str | Path, kind: str) -> None:
    """Record that fuse wrote ``path`` (size and sha256 beside it), so a later command may replace it."""
    path = Path(path)
    record = {"kind": kind, "size": path.stat().st_size, "sha256": file_sha256(path)}
    write_text(record_of(path), json.dumps(record))


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
            grant(aside)  # the rename's target; nothing inside the moved run changes
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
    fd = open_lock_file(grant(path))
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
