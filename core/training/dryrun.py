"""`fuse train --dry-run`: resolve a recipe completely without loading weights or data."""

from __future__ import annotations

from pathlib import Path

from fuse.api.devices import resolve_device
from fuse.data.shards import shard_set
from fuse.recipes.plan import Plan
from fuse.recipes.recipe import Source
from fuse.recipes.spec import Spec


def _component(spec: Spec) -> dict:
    return {**spec.as_dict(), "package": spec.package}


def _source(source: Source) -> dict:
    if source.dataset is not None:
        return {"dataset": source.dataset.name, "splits": [source.train_split, source.val_split]}
    # Not an error here: a GPU recipe's data may live on another machine.
    out = {}
    for split, path in (("train", source.train), ("val", source.val)):
        shards = shard_set(path) if path is not None else None
        if shards is not None:
            out[split] = {"shards": len(shards.paths), "pattern": str(shards),
                          "exists": all(p.exists() for p in shards.paths)}
        elif path is not None:
            out[split] = {"path": str(path), "exists": Path(path).exists()}
    return out


def dry_run_report(plan: Plan) -> dict:
    """Everything the run would use, with defaults filled in (the plan has already failed on what would fail)."""
    recipe = plan.recipe
    report = {"name": recipe.name, "device": str(resolve_device(recipe.device)), "output_dir": recipe.output_dir,
              "modalities": {}, "objectives": [], "pairs": []}
    for m, t in plan.towers.items():
        report["modalities"][m] = {"encoder": {**_component(t.encoder), "frozen": t.frozen}, "head": _component(t.head),
                                   "input_kinds": list(t.input_kinds)}
        if t.base:
            report["modalities"][m]["from_base_model"] = str(plan.base_model)
    for o in plan.objectives:
        report["objectives"].append({**_component(o.spec), "weight": o.weight, "pair": list(o.pair)})
    for p in plan.pairs:
        report["pairs"].append({"modalities": list(p.modalities), "batch_size": p.batch_size, "weight": p.weight,
                                "data": _source(p.source)})
    if plan.fusion:
        report["fusion"] = _component(plan.fusion)
    if plan.extras:
        report["extras"] = {n: {"modality": e.modality, "encoder": _component(e.encoder)} for n, e in plan.extras.items()}
    if plan.eval_pairs:
        report["eval_pairs"] = [list(p) for p in plan.eval_pairs]
    report["train"] = recipe.train.model_dump(mode="json")
    return report
