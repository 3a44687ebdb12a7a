"""A run's directory: owned, locked, checked before anything is written, and only then prepared.

``owned_run`` holds the run's lock (one process per run; under torchrun rank 0 holds it for all
ranks) and settles whose the folder is before anything is written: absent or empty, it becomes a
fuse run (marker first, ``fuse.base.owned``); a fuse run is refused unless ``--resume`` continues
it or ``--overwrite`` moves it aside (one rename, nothing deleted); a non-empty folder that is not
a fuse run is refused whatever its files are called. It then sweeps the temporary files a killed
run left (only fuse's own names, only under the lock).

``open_run_dir`` refuses an output_dir that is a file or cannot be written, and on ``--resume``
verifies every file the run will read, rotate or append to (state.pt, its weights, best, every
kept checkpoint, metrics.jsonl) and compares the stored recipe with the new one first, so a
refused resume leaves the run dir exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import yaml

from fuse.base.atomic import storage_error, write_text
from fuse.base.errors import ModelFileError, StorageError
from fuse.base.weights import read_checkpoint
from fuse.base.owned import contents, exclusive, listing, mark, move_aside, owner, sweep_temporaries
from fuse.training.resume import check_resume_recipe, load_state


def check_not_a_file(run_dir: Path) -> None:
    """Neither output_dir nor the nearest existing folder above it may be a file."""
    for p in (run_dir, *run_dir.parents):
        if p.exists():
            if not p.is_dir():
                raise StorageError(f"output_dir {run_dir}: {p} is a file, not a folder; give output_dir a folder path.")
            return


def check_writable(run_dir: Path) -> None:
    """output_dir must be (or become) a folder we can write into; one line naming the fix otherwise."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".fuse-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise storage_error(exc, run_dir) from None


# What makes a run worth keeping: anything else in a fuse run folder (the marker, recipe.yaml,
# skipped_media.txt, an empty checkpoints/) is what a run that failed before its first step leaves.
RESULTS = ("metrics.jsonl", "eval.json", "export", "checkpoints/state.pt")


def has_results(run_dir: Path) -> bool:
    """Whether a fuse run folder holds anything a new run would lose."""
    return any((run_dir / r).exists() for r in RESULTS) or any((run_dir / "checkpoints").glob("*.safetensors"))


def is_run(run_dir: Path) -> bool:
    """A fuse run folder: marked, or (runs from before markers) recipe.yaml beside checkpoints/state.pt."""
    found = owner(run_dir)
    if found is not None:
        return found["kind"] == "run"
    return (run_dir / "recipe.yaml").is_file() and (run_dir / "checkpoints" / "state.pt").is_file()


def settle(run_dir: Path, resume: bool, overwrite: bool, name: str) -> None:
    """Decide, before writing anything, whether this run may use ``run_dir`` (see the module doc)."""
    names = contents(run_dir)
    if resume:
        if not is_run(run_dir):
            what = "absent or empty" if not names else f"not a fuse run: {listing(names)}"
            raise ModelFileError(f"Nothing to resume: {run_dir / 'checkpoints' / 'state.pt'} not found ({run_dir} is "
                                 f"{what}). Run without --resume to start afresh, or fix output_dir.")
        return
    if not names:
        mark(run_dir, "run", recipe=name)
        return
    if not is_run(run_dir):
        raise StorageError(f"output_dir {run_dir} is not empty ({listing(names)}) and is not a fuse run, so fuse "
                           "writes nothing there (not even with --overwrite); give another output_dir.")
    if not has_results(run_dir) and owner(run_dir) is not None:
        return  # a fuse run that stopped before its first step: nothing to lose, start it again
    finished = (run_dir / "export").exists()
    if not overwrite:
        raise StorageError(f"output_dir {run_dir} holds {'a finished' if finished else 'an unfinished'} fuse run; "
                           "add --resume to continue it, --overwrite to move it aside (to "
                           f"{run_dir.name}.old-<time>, nothing deleted), or give another output_dir.")
    aside = move_aside(run_dir)
    mark(run_dir, "run", recipe=name)
    print(f"--overwrite: moved the earlier run {run_dir} aside to {aside} (nothing deleted)")


@contextlib.contextmanager
def owned_run(run_dir: Path, resume: bool, overwrite: bool, name: str) -> Iterator[None]:
    """Hold the run's lock for the block, with the folder settled as this run's (see the module doc).
    Under torchrun rank 0 takes the lock for the whole run; the other ranks write nothing in it."""
    check_not_a_file(run_dir)
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    with exclusive(run_dir, "output_dir"):
        settle(run_dir, resume, overwrite, name)
        gone = sweep_temporaries(run_dir) + sweep_temporaries(run_dir / "checkpoints")
        if gone:
            print(f"removed {len(gone)} temporary file(s) an interrupted run left in {run_dir}")
        yield


def check_resume_files(ckpt_dir: Path, state: dict) -> None:
    """Every checkpoint a resumed run reads or rotates verifies (content hash), and metrics.jsonl is
    a readable file, before anything is written: a damaged file is named now, not after an epoch."""
    names = {Path(state["weights"]).name}
    files = sorted(p for p in ckpt_dir.glob("*.safetensors") if p.name not in names)
    for f in [Path(state["weights"]), *files]:
        try:
            read_checkpoint(f)
        except ModelFileError as exc:
            raise ModelFileError(f"Cannot resume: {exc} Nothing was written; move the damaged file away "
                                 "(best.safetensors: copy a good epoch-NNN over it) or start afresh with --overwrite."
                                 ) from None
    metrics = ckpt_dir.parent / "metrics.jsonl"
    if metrics.exists():
        try:
            metrics.read_bytes()
        except OSError as exc:
            raise ModelFileError(f"Cannot resume: {metrics} is unreadable ({exc.strerror}); nothing was written.") \
                from None


def open_run_dir(run_dir: Path, recipe, resume: bool, main: bool) -> dict | None:
    """Check, then prepare the run dir; returns the state to resume from (None for a fresh run)."""
    state = None
    ckpt_dir = run_dir / "checkpoints"
    check_not_a_file(run_dir)
    if resume:
        state = load_state(ckpt_dir)
        check_resume_files(ckpt_dir, state)  # content hashes, verified before anything is written
        changes = check_resume_recipe(run_dir, recipe)
        if changes and main:
            print(f"resuming with changed settings: {'; '.join(changes)}")
    if main:
        check_writable(run_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        (run_dir / "skipped_media.txt").unlink(missing_ok=True)
    return state
