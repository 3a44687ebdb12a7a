"""Dataset builders: plugins that write paired JSONL manifests from some source.

A builder turns an installed package, a download or a folder into ``train``/``val``
manifests (see ``fuse.manifest``). fuse builds each (name, options) once into the cache dir
and reuses it; ``fuse data build NAME`` does it ahead of time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import pydantic

from .interfaces import Options
from .plugin_manager import registry

DONE_FILE = "fuse_dataset.json"


class DatasetBuilder(ABC):
    """Writes manifests for a paired dataset. Subclasses set ``modalities``."""

    Options: ClassVar[type[pydantic.BaseModel]] = Options
    modalities: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[int] = 0   # raise it when a build's output changes, so cached builds are redone

    def __init__(self, options):
        self.options = options

    @abstractmethod
    def build(self, out_dir: Path) -> dict[str, Path]:
        """Write media and manifests under ``out_dir``; return split name -> manifest path."""


def default_cache_root() -> Path:
    """Where builds and latents go unless a recipe says: $FUSE_CACHE, else ~/.cache/fuse."""
    import os

    return Path(os.environ.get("FUSE_CACHE", Path.home() / ".cache" / "fuse"))


def dataset_dir(name: str, options: pydantic.BaseModel, cache_root: Path, version: int = 0) -> Path:
    """Where a build of (name, options) lives: a folder keyed by their hash (and the builder's version)."""
    key = {"name": name, "options": options.model_dump(mode="json")}
    if version:
        key["version"] = version
    blob = json.dumps(key, sort_keys=True)
    return Path(cache_root) / "datasets" / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def build_dataset(name: str, options: dict | None, cache_root: Path, where: str = "data.dataset",
                  force: bool = False) -> dict[str, Path]:
    """Build (or reuse) a registered dataset; returns split -> manifest path."""
    reg = registry("dataset")
    parsed = reg.parse_options(name, options, where)
    out = dataset_dir(name, parsed, cache_root, getattr(reg.get(name).cls, "version", 0))
    done = out / DONE_FILE
    if done.exists() and not force:
        splits = json.loads(done.read_text())["splits"]
        if all((out / p).exists() for p in splits.values()):
            print(f"dataset '{name}': using the build in {out}")
            return {k: out / p for k, p in splits.items()}
    if out.exists():
        shutil.rmtree(out)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    print(f"dataset '{name}': building into {out}")
    builder = reg.create(name, options, where)
    splits = builder.build(tmp)
    rel = {k: str(Path(p).relative_to(tmp)) for k, p in splits.items()}
    (tmp / DONE_FILE).write_text(json.dumps({"name": name, "options": parsed.model_dump(mode="json"),
                                             "splits": rel}, indent=2))
    tmp.rename(out)
    return {k: out / p for k, p in rel.items()}
