"""Leaving out media files that cannot be used (``data.bad_media: skip``).

By default an unreadable, empty or silent-only file stops the run with its name: usually the
data needs fixing. Web-scale pair sets always hold some broken files, so ``skip`` reads every
file of a split once before encoding, drops the pairs that use a bad one and lists each file
with its reason in ``<output_dir>/skipped_media.txt``. Verdicts are cached under the files'
fingerprint (paths, sizes, mtimes), so a second run does not read them again.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

from fuse.base.atomic import write_text
from fuse.base.errors import DataError
from fuse.base.inputs import input_kind
from fuse.data.cache import values_fingerprint
from fuse.data.manifest import PairedData


def find_bad_files(kind: str, paths: list[str], cache_dir: Path | None = None, label: str = "") -> dict[str, str]:
    """path -> reason for every value the input kind's ``check`` rejects; cached by fingerprint."""
    from tqdm.auto import tqdm

    key = hashlib.sha256(f"{kind}:{values_fingerprint(kind, paths)}".encode()).hexdigest()[:24]
    verdict = Path(cache_dir) / "screened" / f"{key}.json" if cache_dir is not None else None
    if verdict is not None and verdict.exists():
        return json.loads(verdict.read_text())
    bad = {}
    for path in tqdm(paths, desc=f"checking {label or kind} files", unit="file"):
        try:
            input_kind(kind).check(path)
        except DataError as exc:
            bad[path] = re.sub(r" \(or leave such files out.*\)", "", str(exc))
    if verdict is not None:
        write_text(verdict, json.dumps(bad, indent=1))  # atomic: under torchrun every rank screens at once
    return bad


def drop_bad_media(data: PairedData, kinds: dict[str, str], cache_dir: Path | None,
                   log_file: Path | None = None, split: str = "") -> PairedData:
    """``data`` without the pairs that use a bad file; logs what was left out."""
    bad = {m: find_bad_files(kinds[m], data.values[m], cache_dir, f"{m}/{split}")
           for m in data.modalities if input_kind(kinds[m]).files}
    n_bad = sum(map(len, bad.values()))
    if not n_bad:
        return data
    kept = data.without({m: set(b) for m, b in bad.items()})
    if log_file is not None:
        with open(log_file, "a", encoding="utf-8") as f:
            for m, files in bad.items():
                f.writelines(f"{split}\t{m}\t{path}\t{reason}\n" for path, reason in files.items())
    print(f"skipping bad media: left out {n_bad} unusable file(s) of {data.path} and {len(data) - len(kept)} "
          f"pair(s) using them" + (f"; listed in {log_file}" if log_file is not None else ""), file=sys.stderr)
    if len(kept) == 0:
        raise DataError(f"{data.path}: every pair uses an unusable file ({n_bad} skipped); see "
                        f"{log_file or 'the messages above'}.")
    return kept
