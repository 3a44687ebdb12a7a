"""`fuse train --dry-run`: resolve a recipe completely without loading weights or data."""

from __future__ import annotations

from pathlib import Path

from .devices import resolve_device
from .plugin_manager import registry
from .recipe import Recipe


def _component(kind: str, spec, where: str) -> dict:
    entry = registry(kind).get(spec.name, where)
    options = registry(kind).parse_options(spec.name, spec.options, where)
    return {"name": spec.name, "package": entry.package, "options": options.model_dump(mode="json")}


def dry_run_report(recipe: Recipe) -> dict:
    """Everything the run would use, with defaults filled in; raises on what would fail."""
    report = {"name": recipe.name, "device": str(resolve_device(recipe.device)), "output_dir": recipe.output_dir,
              "modalities": {}, "objectives": [], "data": {}}
    for m, spec in recipe.modalities.items():
        report["modalities"][m] = {
            "encoder": {**_component("encoder", spec.encoder, f"modalities.{m}.encoder"), "frozen": spec.encoder.frozen},
            "head": _component("head", spec.head, f"modalities.{m}.head")}
    for i, spec in enumerate(recipe.objectives):
        report["objectives"].append({**_component("objective", spec, f"objectives.{i}"), "weight": spec.weight})
    if recipe.fusion:
        report["fusion"] = _component("fusion", recipe.fusion, "fusion")
    if recipe.teacher:
        report["teacher"] = {"modality": recipe.teacher.modality,
                             "encoder": _component("encoder", recipe.teacher.encoder, "teacher.encoder")}
    if recipe.data.dataset is not None:
        report["data"]["dataset"] = _component("dataset", recipe.data.dataset, "data.dataset")
    for split in ("train", "val"):
        path = getattr(recipe.data, split)
        if path is not None:
            # Not an error here: a GPU recipe's data may live on another machine.
            report["data"][split] = {"path": str(path), "exists": Path(path).exists()}
    report["train"] = recipe.train.model_dump(mode="json")
    return report
