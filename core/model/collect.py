"""What the user names on the command line for `fuse embed` and `fuse search`: files, folders, globs,
list files, manifests, inline strings or stdin, turned into one list of values of an input kind."""

from __future__ import annotations

import glob
import sys
from pathlib import Path

from fuse.base.errors import DataError, decode_utf8
from fuse.base.inputs import input_kind
from fuse.data.manifest import jsonl_records

LIST_SUFFIXES = (".txt", ".lst")  # a file-kind INPUT with one of these suffixes lists paths, one per line


def is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def folder_files(folder: Path, kind) -> list[str]:
    """Every file under ``folder`` (recursively, sorted) that the input kind reads, skipping hidden
    files and folders (such as .fuse-index)."""
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if p.is_file() and not any(part.startswith(".") for part in rel) and kind.accepts(str(p)):
            files.append(str(p.resolve()))
    return files


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file (a list of strings or of paths)."""
    return [line.strip() for line in decode_utf8(path.read_bytes(), path, DataError).splitlines() if line.strip()]


def collect_inputs(kind_name: str, inputs: list[str], stdin=None) -> list[str]:
    """The values ``fuse embed`` / ``fuse search`` read from INPUTS.

    File kinds (image, audio, ...): files, folders (every file of the kind inside), globs, or a
    ``.txt`` list of paths (relative to the list). Inline kinds (text): an existing file gives its
    lines, ``-`` (or no INPUTS) reads stdin, anything else is the string itself."""
    kind = input_kind(kind_name)
    values: list[str] = []
    if not inputs and not kind.files:
        inputs = ["-"]
    for item in inputs:
        if not kind.files:
            if item == "-":
                stream = stdin or sys.stdin
                if stream.isatty():
                    raise DataError(f"No {kind_name} inputs: give strings or a text file, or pipe text into stdin.")
                values += [line.strip() for line in stream.read().splitlines() if line.strip()]
            elif Path(item).is_file():
                values += read_lines(Path(item))
            else:
                values.append(item)
            continue
        path = Path(item).expanduser()
        if is_glob(item):
            found = sorted(p for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not found:
                raise DataError(f"No file matches {item}; check the pattern (quote it so the shell leaves it to fuse).")
            values += [str(Path(p).resolve()) for p in found]
        elif path.is_dir():
            found = folder_files(path, kind)
            if not found:
                raise DataError(f"{path} holds no {kind_name} files; give a folder, files or a glob that has some.")
            values += found
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES and not kind.accepts(str(path)):
            listed = [(path.parent / v).resolve() for v in read_lines(path)]
            missing = [str(p) for p in listed if not p.is_file()]
            if missing:
                raise DataError(f"{path} lists {len(missing)} files that do not exist, e.g. {missing[0]}; fix the list.")
            values += [str(p) for p in listed]
        elif path.is_file():
            values.append(str(path.resolve()))
        else:
            raise DataError(f"{kind_name} input not found: {item}. Give existing files, a folder, a glob or a .txt "
                            "list of paths.")
    if not values:
        raise DataError(f"No {kind_name} inputs: give files, a folder, a glob"
                        f"{' or a .txt list' if kind.files else ', strings, a text file or stdin'}.")
    return values


def manifest_values(path: Path, modality: str, kind_name: str) -> list[str]:
    """The unique values of one modality in a JSONL manifest (file values resolved against it)."""
    kind = input_kind(kind_name)
    values: dict[str, None] = {}
    fields: dict[str, None] = {}
    for line_no, record in jsonl_records(path):
        fields.update(dict.fromkeys(record))
        items = record.get(modality, [])
        for v in items if isinstance(items, list) else [items]:
            if not isinstance(v, str) or not v:
                raise DataError(f"{path}:{line_no}: '{modality}' must be a non-empty string or list of strings.")
            values[str((path.parent / v).resolve()) if kind.files else v] = None
    if not values:
        raise DataError(f"{path} has no '{modality}' values (fields seen: {', '.join(fields) or 'none'}).")
    return list(values)
