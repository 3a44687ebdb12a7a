"""How fuse writes state to disk: every file atomically, every shared folder under a lock.

* ``atomic_path(path)`` yields a unique temporary name beside ``path``; when the block ends the
  file is fsynced, given normal permissions (0666 less the umask: safetensors writes 0600) and
  renamed over ``path`` with ``os.replace``. An error (disk full, ...) removes the temporary
  file, so a reader sees the old file or the new one, never half of one.
* ``atomic_dir(path)`` does the same for a folder (exports, dataset builds, latent caches):
  built under a unique name beside it, fsynced, then renamed into place; an old folder is
  removed only after the new one is complete.
* ``locked(path)`` holds an ``fcntl`` lock on ``<path>.lock`` while a shared folder is built.
  The kernel drops the lock when its process dies (kill -9 included), so it is never stale.

File-system errors become one ``StorageError`` line naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from fuse.base.errors import StorageError

# Every temporary file or folder fuse makes is named ``.<name>.fuse-tmp-<random>[...]`` beside its
# target, so a run, an index or an embed job can find and sweep its own stale ones and nothing else.
TEMP_TAG = "fuse-tmp-"

FIXES = {
    errno.ENOSPC: "free some space or point the path (output_dir, data.cache_dir, $FUSE_CACHE) at a bigger disk",
    errno.EDQUOT: "free some space or point the path at a disk with quota left",
    errno.EACCES: "give yourself write permission there, or choose a folder you own",
    errno.EPERM: "give yourself write permission there, or choose a folder you own",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EISDIR: "it is a folder where a file is expected; choose another path",
    errno.EEXIST: "something already exists there; choose another path",
}


def storage_error(exc: OSError, path: str | Path | None = None) -> StorageError:
    """One line for a file-system error: what, where, and the fix."""
    where = exc.filename or path
    fix = FIXES.get(exc.errno, "check the path")
    return StorageError(f"Cannot write {where}: {exc.strerror or exc} ({fix}).")


def disk_full(exc: BaseException) -> bool:
    """Libraries report a full disk in their own exception types (safetensors: SafetensorError
    'No space left on device (os error 28)'); recognise them so they become one line too."""
    text = str(exc)
    return "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text


def umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(fd: int) -> None:
    os.fsync(fd)  # the one place data reaches the disk: tests inject ENOSPC here


def fsync_file(path: Path) -> None:
    """Flush a written file to disk and give it normal permissions."""
    os.chmod(path, 0o666 & ~umask())
    fd = os.open(path, os.O_RDONLY)
    try:
        _fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make renames inside ``path`` durable."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A unique temporary path beside ``path``; renamed over it (fsynced) when the block succeeds."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{TEMP_TAG}", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise storage_error(exc, path) from None
    tmp = Path(name)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise storage_error(exc, path) from None
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if disk_full(exc):
            raise storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path) from None
        raise
    fsync_dir(path.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in chunks (never mapped, so checking a large file adds nothing to RSS)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def save_tensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """A safetensors file, written atomically (contiguous CPU copies, as safetensors needs)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy ``src`` to ``dst`` atomically (``dst`` is never half-written)."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def finish_tree(root: Path) -> None:
    """fsync every file under ``root`` and give files and folders normal permissions."""
    mask = umask()
    for dirpath, _, files in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for f in files:
            fsync_file(Path(dirpath) / f)
        fsync_dir(Path(dirpath))


def temp_dir_beside(path: Path, tag: str = "new") -> Path:
    """A new, unique, empty folder beside ``path`` (hidden; removed by whoever made it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{TEMP_TAG}{tag}-"))
    except OSError as exc:
        raise storage_error(exc, path) from None


def publish_dir(tmp: Path, path: Path) -> None:
    """Rename a complete folder ``tmp`` to ``path``; an existing ``path`` is removed only afterwards."""
    finish_tree(tmp)
    old = None
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        old = temp_dir_beside(path, "old")
        os.replace(path, old / "x")
    os.replace(tmp, path)  # onto nothing, or an empty folder
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sweep_stale(path: Path) -> None:
    """Remove temp folders a killed writer left beside ``path``; call only while holding ``locked(path)``."""
    for stale in path.parent.glob(f".{path.name}.{TEMP_TAG}*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A unique temporary folder beside ``path``, published over it when the block succeeds;
    on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = temp_dir_beside(path)
    try:
        yield tmp
        publish_dir(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise storage_error(exc, path) from None
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(exc):  # e.g. a plugin's save() writing with its own library
            raise storage_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path) from None
        raise


def _lock_file(path: Path) -> Path:
    """The file ``locked(path)`` locks: hidden, beside the folder it guards (where it stays)."""
    return path.with_name(f".{path.name}.lock")


def held(path: str | Path) -> bool:
    """Whether some live process holds ``locked(path)`` now (the kernel drops a dead one's lock)."""
    try:
        fd = os.open(_lock_file(Path(path)), os.O_RDWR)
    except OSError:
        return False  # never taken
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def open_lock_file(path: Path) -> int:
    """A descriptor of the lock file ``path`` (created with normal permissions, its folder too);
    a refusal of the file system is one StorageError naming the path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
    except OSError as exc:
        raise storage_error(exc, path) from None


@contextlib.contextmanager
def locked(path: str | Path, waiting: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``<path>.lock`` (the kernel releases it if we die).
    ``waiting`` is called once if another process holds it."""
    fd = open_lock_file(_lock_file(Path(path)))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock; the lock file stays (removing it would race)
