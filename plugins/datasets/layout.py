"""What every standard-dataset builder shares: the ``root``/``limit`` options, checking a root's layout
with one clear line per problem, finding media by name, and writing manifests and class lists.

Builders only read ``root``: manifests hold absolute paths into it, and everything fuse writes goes
into the build folder (published whole by ``build_dataset``, so a failed build leaves nothing).
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Literal

import pydantic

import fuse

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
AUDIO_EXT = {".wav", ".flac", ".mp3", ".ogg"}
VIDEO_EXT = {".mp4", ".avi", ".webm", ".mkv", ".mov"}
EXAMPLES = 5  # names shown in a message about many files


class RootOptions(fuse.Options):
    """Options every standard-dataset builder takes."""

    root: str = pydantic.Field(description="The dataset's folder as distributed (read only; never written).")
    limit: int | None = pydantic.Field(None, gt=0, description="Keep the first N items of each split (a quick "
                                       "subset).")
    on_missing: Literal["error", "skip"] = pydantic.Field(
        "error", description="Items whose media file is absent: stop and list them (error), or leave them out "
                             "and count them (skip).")
    allow_outside_root: bool = pydantic.Field(
        False, description="Let an annotation file name media outside the root (../.., an absolute path); off, "
                           "such a path is refused in one line.")

    @pydantic.field_validator("root")
    @classmethod
    def _absolute(cls, v: str) -> str:
        # The build is keyed by its options: the same folder named two ways must be one build.
        return str(Path(v).expanduser().resolve())


class RootBuilder(fuse.DatasetBuilder):
    """A builder of a folder the user holds: its build is keyed by the folder's state too."""

    @classmethod
    def local_inputs(cls, options) -> dict[str, Path]:
        """The root: `fuse train --dry-run` checks it is there."""
        return {"root": Path(options.root)}

    @classmethod
    def source_state(cls, options) -> str:
        """Every folder's mtime (a file added or removed changes it) and every non-media file's size and
        mtime (annotation files, shards), so a changed root is rebuilt; media files are not read."""
        root, digest = Path(options.root), hashlib.sha256()
        media = IMAGE_EXT | AUDIO_EXT | VIDEO_EXT
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            digest.update(f"{folder}:{os.stat(folder).st_mtime_ns}\n".encode())
            for f in sorted(files):
                if os.path.splitext(f)[1].lower() not in media:
                    st = os.stat(os.path.join(folder, f))
                    digest.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:16]


def root_dir(options: RootOptions, dataset: str) -> Path:
    """The root as a resolved folder, or one line saying it is not there."""
    root = Path(options.root).expanduser().resolve()
    if not root.is_dir():
        raise fuse.DataError(f"{dataset}: --root {options.root} is not a folder. Point it at the {dataset} "
                             "folder you downloaded.")
    return root


def find_file(root: Path, names: list[str], dataset: str, what: str, fix: str) -> Path:
    """The first of ``names`` (paths relative to root) that exists, or one line naming all of them."""
    for name in names:
        if (root / name).is_file():
            return root / name
    tried = ", ".join(str(root / n) for n in names)
    raise fuse.DataError(f"{dataset}: {what} not found (looked for {tried}). {fix}")


def read_json(path: Path, dataset: str):
    """A foreign JSON file through fuse's one reader (bounded, UTF-8, one line on any fault)."""
    return fuse.foreign.read_json(path, dataset)


class _Columns(pydantic.BaseModel):
    """Rows read by column names: the named ones required text, the others kept as they are."""

    model_config = pydantic.ConfigDict(extra="allow", frozen=True)


def read_csv(path: Path, dataset: str, schema, delimiter: str = ",") -> list:
    """The rows of a csv as ``schema`` records; a missing column or bad value names the file, line and column.
    A list of column names stands for a schema of required text columns, and the rows come back as dicts."""
    if not isinstance(schema, list):
        return fuse.foreign.read_csv(path, schema, dataset, delimiter)
    fields = {f"c{i}": (str, pydantic.Field(alias=c)) for i, c in enumerate(schema)}
    row = pydantic.create_model("Row", __base__=_Columns, **fields)
    return [{**(r.model_extra or {}), **r.model_dump(by_alias=True, exclude=set(r.model_extra or ()))}
            for r in fuse.foreign.read_csv(path, row, dataset, delimiter)]


def media_path(root: Path, value: str, where: str, options: RootOptions, dataset: str) -> Path:
    """A media path an annotation file gives, resolved inside ``root`` (or refused; --allow-outside-root)."""
    return fuse.foreign.inside(root, value, where, dataset, options.allow_outside_root)


def index_media(root: Path, extensions: set[str]) -> dict[str, Path]:
    """stem -> path of every media file under root (first one wins), for datasets whose files are named by id."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in extensions and path.is_file():
            found.setdefault(path.stem, path)
    return found


class Missing:
    """Counts items whose media is absent, then stops (``error``) or reports the skipped ones (``skip``)."""

    def __init__(self, dataset: str, policy: str, where: Path):
        self.dataset, self.policy, self.where = dataset, policy, where
        self.names: list[str] = []
        self.total = 0

    def check(self, path: Path | None, name: str) -> bool:
        """Whether the item's media exists; absent ones are counted."""
        self.total += 1
        if path is not None and path.is_file():
            return True
        self.names.append(name)
        return False

    def finish(self, out_dir: Path) -> None:
        """Raise or summarise; the skipped names go to ``missing.txt`` in the build folder."""
        if not self.names:
            return
        n, examples = len(self.names), ", ".join(self.names[:EXAMPLES])
        if self.policy == "error" or n == self.total:
            fix = ("Fix --root." if n == self.total else
                   "Fetch them, or pass --on-missing skip to leave those items out.")
            raise fuse.DataError(f"{self.dataset}: {n} of {self.total} media files are missing under {self.where}, "
                                 f"e.g. {examples}. {fix}")
        (out_dir / "missing.txt").write_text("\n".join(self.names) + "\n")
        print(f"{self.dataset}: skipped {n} of {self.total} items whose media is missing under {self.where} "
              f"(e.g. {examples}); missing.txt in the build folder lists them")


def write_splits(out_dir: Path, splits: dict[str, list[dict]], limit: int | None, dataset: str) -> dict[str, Path]:
    """One JSONL manifest per non-empty split (the first ``limit`` records of each); returns split -> path."""
    out = {}
    for split, records in splits.items():
        records = records[:limit] if limit else records
        if not records:
            continue
        path = out_dir / f"{split}.jsonl"
        with path.open("w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        out[split] = path
    if not out:
        raise fuse.DataError(f"{dataset}: no items found; check --root and the dataset's layout "
                             "(docs/datasets-and-benchmarks.md).")
    print(f"{dataset}: " + ", ".join(f"{s} {len(r[:limit] if limit else r)}" for s, r in splits.items() if r))
    return out


def interleave(records: list[dict], key: str = "label") -> list[dict]:
    """Records round-robin over their classes (first of each class, then second ...), so --limit N keeps
    every class rather than the first few."""
    by_class: dict[str, list[dict]] = {}
    for r in records:
        by_class.setdefault(r[key], []).append(r)
    rounds = max((len(v) for v in by_class.values()), default=0)
    return [v[i] for i in range(rounds) for v in by_class.values() if i < len(v)]


def write_classes(out_dir: Path, labels: list[str], names: list[str]) -> Path:
    """classes.tsv beside the manifests: one ``label<TAB>name`` line per class, in class order. Benchmarks
    read it, so an item's label (unique) and the name its prompts use (maybe shared) both come from the builder."""
    path = out_dir / "classes.tsv"
    path.write_text("".join(f"{label}\t{name}\n" for label, name in zip(labels, names)), encoding="utf-8")
    return path


def class_names(name: str) -> list[str]:
    """A shipped class-name list (imagenet, imagenet_synsets, cifar10, cifar100, esc50), one name per line."""
    text = resources.files(__package__).joinpath("classes", f"{name}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
