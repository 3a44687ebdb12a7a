"""A run's directory: checked before anything is written, and only then prepared.

``open_run_dir`` refuses an output_dir that is a file or cannot be written, and on ``--resume``
loads state.pt and compares the stored recipe with the new one first, so a refused resume
leaves the run dir exactly as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import yaml

from fuse.api.atomic import storage_error, write_text
from fuse.api.errors import StorageError
from fuse.api.weights import read_checkpoint
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


def open_run_dir(run_dir: Path, recipe, resume: bool, main: bool) -> dict | None:
    """Check, then prepare the run dir; returns the state to resume from (None for a fresh run)."""
    state = None
    ckpt_dir = run_dir / "checkpoints"
    check_not_a_file(run_dir)
    if resume:
        state = load_state(ckpt_dir)
        read_checkpoint(state["weights"])  # its content hash, verified before anything is written
        changes = check_resume_recipe(run_dir, recipe)
        if changes and main:
            print(f"resuming with changed settings: {'; '.join(changes)}")
    if main:
        check_writable(run_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "recipe.yaml", yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))
        (run_dir / "skipped_media.txt").unlink(missing_ok=True)
    return state
