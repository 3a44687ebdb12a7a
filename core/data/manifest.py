"""Paired-data manifests: JSONL, one record per item, keys named after the modalities.

    {"id": "cat-1", "image": "images/cat.jpg", "text": ["a cat", "a kitten on a sofa"]}

File values (images, audio) are paths relative to the manifest. A value may be a list (an
image with five captions). Values are de-duplicated per modality, and the ground truth is
the set of (value_a, value_b) pairs found in the records, so both "one record per image with
a caption list" and "one record per pair" give the standard many-to-many retrieval protocol.
A manifest may hold more modalities than a pair reads, and records may lack some: a pair uses
the records that have both of its modalities.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from fuse.base.errors import DataError, decode_utf8


@dataclass
class PairedData:
    """Unique values per modality and the pairs between them."""

    path: Path
    modalities: tuple[str, str]
    values: dict[str, list[str]]   # modality -> unique values (absolute paths or text)
    pairs: torch.Tensor            # [P, 2] long: (index into values[a], index into values[b])
    digest: str                    # sha256 of the manifest bytes
    n_records: int

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def without(self, drop: dict[str, set[str]]) -> "PairedData":
        """A copy without the given values, the pairs that use them, and values left unpaired
        (an orphan would be a distractor no query can retrieve)."""
        keep_pair = torch.ones(len(self), dtype=torch.bool)
        for col, m in enumerate(self.modalities):
            gone = torch.tensor([v in drop.get(m, ()) for v in self.values[m]], dtype=torch.bool)
            if len(self):
                keep_pair &= ~gone[self.pairs[:, col]]
        pairs = self.pairs[keep_pair]
        values, columns = {}, []
        for col, m in enumerate(self.modalities):
            used = torch.unique(pairs[:, col])
            remap = torch.full((len(self.values[m]),), -1, dtype=torch.long)
            remap[used] = torch.arange(len(used))
            values[m] = [self.values[m][i] for i in used.tolist()]
            columns.append(remap[pairs[:, col]])
        pairs = torch.stack(columns, dim=1) if len(pairs) else pairs
        return PairedData(self.path, self.modalities, values, pairs, self.digest, self.n_records)


class PairCollector:
    """Records -> PairedData: unique values per modality (in order of appearance) and their pairs.
    Shared by JSONL manifests and tar shards (fuse.data.shards), so both give the same tables."""

    def __init__(self, modalities: tuple[str, str]):
        self.modalities = tuple(modalities)
        self.values: dict[str, list[str]] = {m: [] for m in modalities}
        self.index: dict[str, dict[str, int]] = {m: {} for m in modalities}
        self.pairs: set[tuple[int, int]] = set()
        self.n_records = 0

    def add(self, items: dict[str, list[str]]) -> None:
        """One record: its values of both modalities (every value of one pairs with every value of the other)."""
        ids = {}
        for m in self.modalities:
            ids[m] = []
            for v in items[m]:
                if v not in self.index[m]:
                    self.index[m][v] = len(self.values[m])
                    self.values[m].append(v)
                ids[m].append(self.index[m][v])
        a, b = self.modalities
        self.pairs.update((i, j) for i in ids[a] for j in ids[b])
        self.n_records += 1

    def build(self, path: Path, digest: str) -> PairedData:
        return PairedData(path, self.modalities, self.values, torch.tensor(sorted(self.pairs), dtype=torch.long),
                          digest, self.n_records)



def jsonl_records(path: Path, raw: bytes | None = None):
    """(line number, record) for each non-blank line of a JSONL file; a line that is not one JSON
    object is a DataError naming ``path:line``. The one reader of every manifest fuse takes."""
    for line_no, line in enumerate(decode_utf8(path.read_bytes() if raw is None else raw, path, DataError)
                                   .splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg}). Each line must be one JSON object.") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}.")
        yield line_no, record


def load_pairs(path: str | Path, modalities: tuple[str, str], file_modalities: tuple[str, ...] = (),
               check_files: bool = True) -> PairedData:
    """Read a manifest; ``file_modalities`` are the modalities whose values are file paths."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"Manifest not found: {path}. Build it (e.g. `fuse data build emoji`) or fix data.train/data.val.")
    raw = path.read_bytes()
    base = path.parent.resolve()
    collector = PairCollector(modalities)
    lacking = 0
    seen_fields: dict[str, None] = {}
    for line_no, record in jsonl_records(path, raw):
        where = f"{path}:{line_no}"
        seen_fields.update(dict.fromkeys(record))
        if any(m not in record for m in modalities):
            lacking += 1
            continue
        items = {}
        for m in modalities:
            items[m] = record[m] if isinstance(record[m], list) else [record[m]]
            if not items[m] or not all(isinstance(v, str) and v for v in items[m]):
                raise DataError(f"{where}: '{m}' must be a non-empty string or list of strings.")
            if m in file_modalities:
                items[m] = [str((base / v).resolve()) for v in items[m]]
                missing = [p for p in items[m] if check_files and not Path(p).is_file()]
                if missing:
                    raise DataError(f"{where}: {m} file not found: {missing[0]}")
        collector.add(items)
    n_records = collector.n_records
    if n_records == 0 and lacking:
        raise DataError(f"{path}: no record has both '{modalities[0]}' and '{modalities[1]}' (fields seen: "
                        f"{', '.join(seen_fields)}). Manifest keys must be the recipe's modality names.")
    if n_records == 0:
        raise DataError(f"Manifest is empty: {path}. It needs one JSON record per line.")
    if lacking:
        print(f"{path.name}: {lacking} of {lacking + n_records} records lack {modalities[0]} or {modalities[1]}; "
              f"the {'-'.join(modalities)} pairs use the other {n_records}")
    return collector.build(path, hashlib.sha256(raw).hexdigest())
