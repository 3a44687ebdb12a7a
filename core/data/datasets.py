"""Dataset builders: plugins that write paired JSONL manifests from some source.

A builder turns an installed package, a download or a folder into ``train``/``val``
manifests (see ``fuse.data.manifest``). fuse builds each (name, options) once into the cache dir
and reuses it; ``fuse data build NAME`` does it ahead of time.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import pydantic

from fuse.base.atomic import atomic_dir, locked, sweep_stale, write_text
from fuse.base.options import Options
from fuse.base.plugin_manager import registry

DONE_FILE = "fuse_dataset.json"


class DatasetBuilder(ABC):
    """Writes manifests for a paired dataset. Subclasses set ``modalities``."""

    Options: ClassVar[type[pydantic.BaseModel]] = Options
    modalities: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[int] = 0   # raise it when a build's output changes, so cached builds are redone

    def __init__(self, options):
        self.options = options

    @classmethod
    def source_state(cls, options) -> str:
        """A digest of the files a build reads, for builders of a user's folder: part of the build's key, so
        editing, adding or removing those files makes a new build instead of reusing a stale one."""
        return ""

    @classmethod
    def local_inputs(cls, options) -> dict[str, Path]:
        """option name -> local file or folder the build reads (a downloaded dataset's root), so
        `fuse train --dry-run` can check it exists without building; {} for builders that make their data."""
        return {}

    @abstractmethod
    def build(self, out_dir: Path) -> dict[str, Path]:
        """Write media and manifests under ``out_dir``; return split name -> manifest path."""


def default_cache_root() -> Path:
    """Where builds and latents go unless a recipe says: $FUSE_CACHE, else ~/.cache/fuse."""
    import os

    return Path(os.environ.get("FUSE_CACHE", Path.home() / ".cache" / "fuse"))


def dataset_dir(name: str, options: pydantic.BaseModel, cache_root: Path, version: int = 0, state: str = "") -> Path:
    """Where a build of (name, options) lives: a folder keyed by their hash (and the builder's version and
    source state)."""
    key = {"name": name, "options": options.model_dump(mode="json")}
    if version:
        key["version"] = version
    if state:
        key["state"] = state
    blob = json.dumps(key, sort_keys=True)
    return Path(cache_root) / "datasets" / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _finished(out: Path) -> dict[str, Path] | None:
    """A complete build's split -> manifest, or None."""
    try:
        splits = json.loads((out / DONE_FILE).read_text())["splits"]
    except (OSError, ValueError, KeyError):
        return None
    return {k: out / p for k, p in splits.items()} if all((out / p).exists() for p in splits.values()) else None


def build_dataset(name: str, options: dict | None, cache_root: Path, where: str = "data.dataset",
                  force: bool = False) -> dict[str, Path]:
    """Build (or reuse) a registered dataset; returns split -> manifest path.

    The build holds a lock on its folder (a second process waits, then reads the result), writes
    into a unique temp folder and publishes it by rename, with fuse_dataset.json written last."""
    reg = registry("dataset")
    parsed = reg.parse_options(name, options, where)
    cls = reg.get(name).cls
    state = cls.source_state(parsed) if hasattr(cls, "source_state") else ""
    out = dataset_dir(name, parsed, cache_root, getattr(cls, "version", 0), state)
    if not force and (found := _finished(out)):
        print(f"dataset '{name}': using the build in {out}")
        return found
    with locked(out, lambda: print(f"dataset '{name}': waiting for another process building {out}")):
        if not force and (found := _finished(out)):  # another process built it while we waited
            print(f"dataset '{name}': using the build in {out}")
            return found
        sweep_stale(out)  # what a killed builder left
        print(f"dataset '{name}': building into {out}")
        builder = reg.create(name, options, where)
        with atomic_dir(out) as tmp:
            splits = builder.build(tmp)
            rel = {k: str(Path(p).relative_to(tmp)) for k, p in splits.items()}
            write_text(tmp / DONE_FILE, json.dumps({"name": name, "options": parsed.model_dump(mode="json"),
                                                    "splits": rel}, indent=2))
    return {k: out / p for k, p in rel.items()}
