"""`fuse train --dry-run`: resolve a recipe completely without loading weights or data.

Besides the plan (plugins and options, which load_plan already resolved), it checks what can be
checked without loading a model: manifests and shards exist and are readable, local and pkg: model
paths exist, hub models are in the HF cache (a note, not an error: a run downloads them). A
missing file is one error line naming the recipe field, so a GPU job does not fail an hour in.
"""

from __future__ import annotations

import os
from pathlib import Path

from fuse.base.devices import resolve_device
from fuse.base.errors import DataError, FuseError, ModelFileError
from fuse.base.paths import is_local, resolve_path
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


PATH_OPTIONS = ("model", "checkpoint", "weights", "path")  # options that name a file, a folder or a hub model


def _readable(path: Path, field: str) -> None:
    if not path.exists():
        raise DataError(f"{field}: {path} does not exist. Fix the path (or override it: {field}=PATH), or build "
                        "the manifest first (fuse data build, docs/getting-started.md 'Your own data').")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise DataError(f"{field}: {path} is not a readable file. Point {field} at a JSONL manifest or tar shards.")


def _check_source(source: Source, where: str, checked: list[str], unchecked: list[str]) -> None:
    if source.dataset is not None:
        from fuse.base.plugin_manager import registry

        reg = registry("dataset")
        options = reg.parse_options(source.dataset.name, source.dataset.options, f"{where}.dataset")
        for key, path in reg.get(source.dataset.name).cls.local_inputs(options).items():
            if not path.exists():
                raise DataError(f"{where}.dataset.options.{key}: {path} does not exist. Point it at the "
                                f"{source.dataset.name} folder you downloaded (override: "
                                f"{where}.dataset.options.{key}=PATH).")
            checked.append(str(path))
        note = f"dataset '{source.dataset.name}' (a run builds it, or: fuse data build {source.dataset.name})"
        if note not in unchecked:
            unchecked.append(note)
        return
    for split, path in (("train", source.train), ("val", source.val)):
        if path is None:
            continue
        shards = shard_set(path)
        for p in (shards.paths if shards is not None else [Path(path)]):
            _readable(Path(p), f"{where}.{split}")
            checked.append(str(p))


def _components(plan: Plan):
    """(recipe field, spec) for every component the run would build."""
    for m, t in plan.towers.items():
        if not t.base:  # a base_model tower comes from base_model's own files
            yield f"modalities.{m}.encoder", t.encoder
        yield f"modalities.{m}.head", t.head
    for name, e in plan.extras.items():
        yield ("teacher" if name == "teacher" and plan.recipe.teacher is not None else f"extras.{name}") + ".encoder", e.encoder
    if plan.fusion:
        yield "fusion", plan.fusion


def _check_model(value: str, field: str, checked: list[str], unchecked: list[str]) -> None:
    if value.startswith("pkgsplit:"):  # resolving would unpack the zip: only that its parts are installed
        from fuse.base.splitzip import find_parts

        if not find_parts(value[len("pkgsplit:"):]):
            raise ModelFileError(f"{field}: '{value}' names a split model zip whose parts are not installed.")
        checked.append(value)
    elif is_local(value):
        try:
            checked.append(str(resolve_path(value)))
        except FuseError as exc:
            raise ModelFileError(f"{field}: {exc}") from None
    else:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = isinstance(try_to_load_from_cache(value, "config.json"), str)
        except Exception:  # not a valid repo id (a timm name): nothing to look up
            cached = False
        if not cached:
            unchecked.append(f"{field}={value} (not in the HF cache: a run downloads it)")


def check_files(plan: Plan) -> tuple[list[str], list[str]]:
    """(what was checked, what was not) among the run's files; a missing or unreadable one raises, naming its field."""
    checked: list[str] = []
    unchecked: list[str] = []
    recipe = plan.recipe
    for p in plan.pairs:
        where = "data" if p.source is recipe.data else f"data.pairs[{p.key}]"
        _check_source(p.source, where, checked, unchecked)
    if plan.eval_pairs and not any(p.source is recipe.data for p in plan.pairs):
        _check_source(recipe.data, "data", checked, unchecked)
    for field, spec in _components(plan):
        options = spec.as_dict().get("options") or {}
        for key in PATH_OPTIONS:
            value = options.get(key)
            if isinstance(value, str) and value:
                if spec.name == "timm" and key == "model":
                    if options.get("pretrained", True) and not options.get("checkpoint"):
                        unchecked.append(f"{field}.options.model={value} (timm weights: a run downloads them)")
                    continue
                _check_model(value, f"{field}.options.{key}", checked, unchecked)
    if plan.base_model is not None:
        checked.append(str(plan.base_model))  # load_plan read its config already
    return checked, unchecked


def summary(checked: list[str], unchecked: list[str]) -> str:
    """The one line after the report: what exists, and what a dry run cannot know."""
    line = f"dry run: plugins and options resolved; {len(checked)} file(s) and folder(s) exist"
    if unchecked:
        line += "; not checked: " + "; ".join(unchecked)
    return line
