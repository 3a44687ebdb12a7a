"""Files fuse did not write (annotation files, CSVs, side-cars, class lists, templates, other runs' files)
are read here and only here, so no reader can skip the rules:

* **bounded**: only regular files (not /dev/zero, a FIFO or a folder), at most ``limit`` bytes, read in
  one bounded call; JSON nested deeper than Python's parser allows is one line, not a RecursionError.
* **UTF-8**: text is UTF-8 (a leading BOM is dropped). Any other byte is one line naming the file, line
  and byte offset. Latin-1 is refused, not guessed: every byte string decodes as Latin-1, so a guess
  would turn a wrong file into wrong class names without a word; ``iconv -f latin1 -t utf-8`` fixes it.
* **typed**: records are pydantic models of the format's fields; a bad record is one line naming the
  file, the record and the field. The schema also bounds the shape (a record is what its model allows).
* **inside**: a path read from a file resolves inside its root, or is refused (``allow_outside``).

YAML goes through ``fuse.recipes.strict_yaml.read_yaml`` (which reads its text here).
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path
from typing import Annotated, Any, TypeVar

import pydantic

from fuse.base.errors import DataError, FuseError, decode_utf8

M = TypeVar("M", bound=pydantic.BaseModel)

ANNOTATIONS = 1 << 30   # an annotation file (Karpathy's COCO file is 140 MB, COCO 2017 train 90 MB)
SMALL = 16 << 20        # a class list, template file, side-car or another run's recipe
MANIFEST = 16 << 30     # a JSONL manifest, read whole (about 80 million short records)


# A record field holding a path the builder reads under its root (through ``inside``): declaring it lets the
# registry-walking test derive '../..' and absolute paths for it too.
MediaPath = Annotated[str, pydantic.Field(json_schema_extra={"media_path": True})]


class Record(pydantic.BaseModel):
    """A record of a foreign format: the fields fuse reads, typed; other fields are ignored (formats grow)."""

    model_config = pydantic.ConfigDict(extra="ignore", frozen=True)


def read_bytes(path: Path | str, what: str, limit: int = ANNOTATIONS, error: type[FuseError] = DataError) -> bytes:
    """A regular file's bytes, at most ``limit`` of them; anything else is one line."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise error(f"{what}: cannot read {path} ({exc.strerror}).") from None
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{what}: {path} is not a regular file (a device, pipe or folder); give a file.")
    if info.st_size > limit:
        raise error(f"{what}: {path} is {info.st_size:,} bytes, more than fuse reads from such a file "
                    f"({limit:,}); is it the right file?")
    with open(path, "rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise error(f"{what}: {path} grew past {limit:,} bytes while being read.")
    return raw


def read_text(path: Path | str, what: str, limit: int = ANNOTATIONS, error: type[FuseError] = DataError) -> str:
    """A foreign text file as UTF-8 (BOM dropped), bounded; a non-UTF-8 byte is one line with its offset."""
    raw = read_bytes(path, what, limit, error)
    try:
        text = decode_utf8(raw, path, error)
    except FuseError as exc:
        raise error(f"{what}: {exc} (Latin-1? iconv -f latin1 -t utf-8 converts it)") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_lines(path: Path | str, what: str, limit: int = SMALL) -> list[str]:
    """The non-blank lines of a list file (class names, templates), stripped."""
    return [line.strip() for line in read_text(path, what, limit).splitlines() if line.strip()]


def parse_json(text: str, path: Path | str, what: str, error: type[FuseError] = DataError):
    """``text`` as JSON; invalid or too deeply nested JSON is one line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what}: {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from None
    except RecursionError:
        raise error(f"{what}: {path} nests arrays or objects deeper than fuse reads; is it the right file?") from None


def read_json(path: Path | str, what: str, limit: int = ANNOTATIONS):
    """A foreign JSON file, bounded and UTF-8 (see the module docstring); validate it with ``validate``."""
    return parse_json(read_text(path, what, limit), path, what)


def _field(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(the record itself)"


def validate(schema: type[M], value: Any, path: Path | str, record: str, what: str) -> M:
    """``value`` as ``schema``; a mismatch is one line naming the file, the record and the first bad field."""
    try:
        return schema.model_validate(value)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        got = "" if err["type"] == "missing" else f" (got {str(err.get('input'))[:40]!r})"
        raise DataError(f"{what}: {path}: {record}: field '{_field(err['loc'])}': {err['msg'].lower()}{got}; "
                        "use the file as distributed.") from None


def validate_all(schema: type[M], values: Any, path: Path | str, where: str, what: str) -> list[M]:
    """Every item of the list ``values`` (``where`` names it in the file, e.g. images) as ``schema``."""
    if not isinstance(values, list):
        raise DataError(f"{what}: {path}: '{where}' is {type(values).__name__}, not a list; use the file as "
                        "distributed.")
    return [validate(schema, v, path, f"{where}[{i}]", what) for i, v in enumerate(values)]


def read_csv(path: Path | str, schema: type[M], what: str, delimiter: str = ",",
             limit: int = ANNOTATIONS) -> list[M]:
    """The rows of a csv with a header, each as ``schema`` (column name = field name); a missing column or a
    bad value is one line naming the file, its line and the column."""
    text = read_text(path, what, limit)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = [f.alias or name for name, f in schema.model_fields.items() if f.is_required()]
    try:   # a NUL byte, or a field over csv's 128 KiB limit, is a csv.Error
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{what}: {path} has no column(s) {', '.join(missing)} (header: "
                            f"{', '.join(reader.fieldnames or [])}); is it the {what} file?")
        return [validate(schema, row, path, f"line {reader.line_num}", what) for row in reader]
    except csv.Error as exc:
        raise DataError(f"{what}: {path}: line {reader.line_num}: {exc}.") from None


def read_rows(path: Path | str, schema: type[M], what: str, limit: int = SMALL) -> list[M]:
    """The lines of a whitespace-separated text list (a split or class list; blank and ``#`` lines skipped), each
    as ``schema``: the fields in declaration order, the last one taking the rest of the line (names with
    spaces). A short or bad line is one line naming the file, its line and the field."""
    fields = list(schema.model_fields)
    rows = []
    for n, line in enumerate(read_text(path, what, limit).splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            row = dict(zip(fields, line.split(None, len(fields) - 1)))
            rows.append(validate(schema, row, path, f"line {n}", what))
    return rows


def inside(root: Path, value: str, where: str, what: str, allow_outside: bool = False) -> Path:
    """``value`` (a path a foreign file names) resolved under ``root``; one that leaves the root (``..``, an
    absolute path, a symlink out) is refused unless ``allow_outside``."""
    root = Path(root).resolve()
    path = (root / value).resolve()
    if not allow_outside and not path.is_relative_to(root):
        raise DataError(f"{what}: {where} names '{value}', which is outside {root}; fuse reads only files "
                        "inside the root (pass --allow-outside-root to allow it).")
    return path
