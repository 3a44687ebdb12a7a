"""Training data of a plan: each pair's records from its own source, and one value table per modality.

Each trained pair reads its manifests (its own, or data's), keeping the records that hold both
of its modalities. Per split, the values of a modality across all pairs form one table, so a
frozen tower is encoded once however many pairs use it; each pair keeps its own values for
evaluation (its candidates are its own items) and maps them to rows of the tables.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fuse.base.errors import DataError
from fuse.base.inputs import input_kind, set_limits
from fuse.data.datasets import build_dataset
from fuse.data.manifest import PairedData, load_pairs
from fuse.data.screening import drop_bad_media
from fuse.data.shards import ShardSet, load_shard_pairs, shard_set
from fuse.recipes.plan import Plan
from fuse.recipes.recipe import Source


@dataclass
class SplitData:
    """One split: value tables per modality and each pair's data, with its rows in the tables."""

    values: dict[str, list[str]] = field(default_factory=dict)
    pairs: dict[tuple[str, str], PairedData] = field(default_factory=dict)
    rows: dict[tuple[str, str], dict[str, torch.Tensor]] = field(default_factory=dict)

    def add(self, data: PairedData) -> None:
        """Add a pair's data: extend the modality tables with its new values and map its values to rows."""
        rows = {}
        for m in data.modalities:
            table = self.values.setdefault(m, [])
            index = {v: i for i, v in enumerate(table)}
            for v in data.values[m]:
                if v not in index:
                    index[v] = len(table)
                    table.append(v)
            rows[m] = torch.tensor([index[v] for v in data.values[m]], dtype=torch.long)
        self.pairs[data.modalities] = data
        self.rows[data.modalities] = rows

    def table_pairs(self, pair: tuple[str, str]) -> torch.Tensor:
        """The pair's (a, b) pairs as rows of the value tables [P, 2]."""
        data, rows = self.pairs[pair], self.rows[pair]
        return torch.stack([rows[m][data.pairs[:, c]] for c, m in enumerate(pair)], dim=1)


def source_manifests(source: Source, cache_dir: Path, where: str) -> dict[str, Path | ShardSet]:
    """{"train": manifest, "val": manifest (if any)} of a source: given paths (or tar shard sets, see
    fuse.data.shards), or a built dataset's splits."""
    if source.train is not None:
        splits = {"train": shard_set(source.train) or Path(source.train)}
        if source.val:
            splits["val"] = shard_set(source.val) or Path(source.val)
        for split, path in splits.items():
            if isinstance(path, ShardSet):
                missing = [p for p in path.paths if not p.is_file()]
                if missing:
                    raise DataError(f"{where}.{split}: {len(missing)} of the {len(path.paths)} shards {path} names "
                                    f"are missing, e.g. {missing[0]}. Fix the pattern, or pack them (fuse data pack).")
            elif not path.exists():
                raise DataError(f"{where}.{split}: manifest {path} not found. Fix the path, or build one "
                                "(docs/getting-started.md, 'Your own data').")
        return splits
    built = build_dataset(source.dataset.name, source.dataset.options, cache_dir, where=f"{where}.dataset")
    wanted = {"train": source.train_split, "val": source.val_split}
    out = {}
    for role, split in wanted.items():
        if split is None:
            continue
        if split not in built:
            raise DataError(f"{where}.{role}_split: dataset '{source.dataset.name}' has no split '{split}'; it "
                            f"built {', '.join(built)}.")
        out[role] = built[split]
    return out


def fraction_key(seed: int, value: str) -> float:
    """A value's place in [0, 1) under a seed: items below f form the fraction-f subset, so subsets nest."""
    return int.from_bytes(hashlib.sha256(f"{seed}\0{value}".encode()).digest()[:8], "big") / 2 ** 64


def take_fraction(data: PairedData, fraction: float, seed: int) -> PairedData:
    """The pairs of the fraction ``fraction`` of the pair's first-modality items (an image with all its
    captions stays whole). Items are keyed by their value relative to the manifest's folder, so the subset
    does not change when the dataset moves."""
    a = data.modalities[0]
    base = str(data.path.parent.resolve()) + os.sep

    def key(v: str) -> str:
        return v[len(base):] if v.startswith(base) else v

    drop = {v for v in data.values[a] if fraction_key(seed, key(v)) >= fraction}
    kept = data.without({a: drop})
    print(f"data.fraction {fraction:g}: training on {len(kept.values[a])} of {len(data.values[a])} {a} items "
          f"({len(kept)} of {len(data)} {'-'.join(data.modalities)} pairs)")
    return kept


def load_data(plan: Plan, kinds: dict[str, str], cache_dir: Path, skipped_log: Path | None) -> dict[str, SplitData]:
    """Every trained (and evaluated) pair's data per split, screened for bad media when the recipe says so."""
    recipe = plan.recipe
    set_limits(max_image_pixels=recipe.data.max_image_pixels)
    files = {m: input_kind(k).files for m, k in kinds.items()}
    splits: dict[str, SplitData] = {"train": SplitData()}
    jobs = [(p.modalities, p.source, "data" if p.source is recipe.data else f"data.pairs[{p.key}]", ("train", "val"))
            for p in plan.pairs]
    jobs += [(pair, recipe.data, "data", ("val",)) for pair in plan.eval_pairs]
    for pair, source, where, roles in jobs:
        manifests = source_manifests(source, cache_dir, where)
        for role in roles:
            if role not in manifests:
                continue
            if isinstance(manifests[role], ShardSet):
                data = load_shard_pairs(manifests[role], pair, {m: input_kind(kinds[m]) for m in pair}, cache_dir,
                                        skip_incomplete=recipe.data.bad_media == "skip")
            else:
                data = load_pairs(manifests[role], pair, tuple(m for m in pair if files[m]))
            if recipe.data.bad_media == "skip":
                data = drop_bad_media(data, {m: kinds[m] for m in pair}, cache_dir, skipped_log, role)
            if role == "train" and recipe.data.fraction < 1:
                data = take_fraction(data, recipe.data.fraction, recipe.seed)
            if role == "train" and len(data) < 2:
                raise DataError(f"{manifests[role]}: {len(data)} {'-'.join(pair)} pair(s); contrastive training "
                                "needs at least 2.")
            splits.setdefault(role, SplitData()).add(data)
    for pair in plan.eval_pairs:
        if pair not in splits.get("val", SplitData()).pairs:
            raise DataError(f"eval.pairs: {list(pair)} needs data's val split, and this recipe's data has none.")
    return splits


def describe(splits: dict[str, SplitData]) -> str:
    """One line per split: how many pairs of each kind, e.g. for the run log."""
    parts = []
    for name, split in splits.items():
        counts = ", ".join(f"{len(d)} {'-'.join(p)}" for p, d in split.pairs.items())
        parts.append(f"{name}: {counts}")
    return "data: " + "; ".join(parts) + " pairs"
