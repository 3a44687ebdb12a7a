"""Recipes: one YAML file per experiment, validated with pydantic, overridable from the CLI.

A recipe names every component by its registered name (``encoder: {name: timm, ...}``), never
an import path, so loading a recipe can only build what installed plugins registered. All
errors in a recipe are collected into one message naming the file and the field paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from .errors import FuseError, RecipeError
from .interfaces import Encoder
from .interfaces import Options as Strict
from .validation import format_validation_error


class Component(Strict):
    """A registered component and its options."""

    name: str
    options: dict[str, Any] = {}


class EncoderSpec(Component):
    frozen: bool = True  # frozen encoders are run once and their latents cached
    # With frozen: false, train only the parameters whose names match one of these globs
    # (partly unfrozen, e.g. ["model.encoder.layer.5.*"]); None trains the whole encoder.
    trainable: list[str] | None = None

    @pydantic.model_validator(mode="after")
    def _trainable_needs_unfrozen(self):
        if self.trainable is not None and self.frozen:
            raise ValueError("trainable names parameters to fine-tune, so it needs frozen: false")
        if self.trainable is not None and not self.trainable:
            raise ValueError("trainable: give at least one parameter-name pattern, or leave it out to train all")
        return self


class ModalitySpec(Strict):
    encoder: EncoderSpec
    head: Component = Component(name="residual-mlp")


class ObjectiveSpec(Component):
    weight: float = 1.0


class TeacherSpec(Strict):
    """A frozen encoder whose latents of one modality are given to objectives as extras['teacher']."""

    modality: str
    encoder: Component


class DataSpec(Strict):
    dataset: Component | None = None   # a registered dataset builder that writes the manifests
    train: str | None = None           # or explicit JSONL manifests
    val: str | None = None
    cache_dir: str | None = None       # default: $FUSE_CACHE or ~/.cache/fuse
    cache_latents: bool = True
    encode_batch_size: int = pydantic.Field(64, gt=0)
    num_workers: int = pydantic.Field(0, ge=0)
    # An unreadable, empty or silent-only image/audio file: stop naming it ("error"), or leave
    # out the pairs that use it and list it in <output_dir>/skipped_media.txt ("skip").
    bad_media: Literal["error", "skip"] = "error"

    @pydantic.model_validator(mode="after")
    def _one_source(self):
        if self.dataset is None and self.train is None:
            raise ValueError("give data.dataset (a registered dataset) or data.train (a manifest path)")
        return self


class OptimSpec(Strict):
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    encoder_lr: float | None = None  # learning rate for unfrozen encoders (default: lr / 10)
    grad_clip: float | None = pydantic.Field(None, gt=0)


class ScheduleSpec(Strict):
    warmup_steps: int = pydantic.Field(0, ge=0)
    min_lr_ratio: float = pydantic.Field(0.0, ge=0, le=1)


class TrainSpec(Strict):
    batch_size: int = pydantic.Field(256, gt=1)
    epochs: int = pydantic.Field(10, gt=0)
    max_steps: int | None = pydantic.Field(None, gt=0)
    grad_accum: int = pydantic.Field(1, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    log_every: int = pydantic.Field(10, gt=0)
    eval_every: int = pydantic.Field(1, gt=0)  # epochs
    best_metric: str = "mean/R@1"             # a key of the val metrics, higher is better
    drop_last: bool = True
    # Recent epoch checkpoints kept besides best.safetensors and state.pt; null keeps them all.
    # One per epoch of a long run fills a disk (open_clip's --delete-previous-checkpoint).
    keep_checkpoints: int | None = pydantic.Field(1, ge=1)


class EvalSpec(Strict):
    ks: tuple[int, ...] = (1, 5, 10)
    chunk_size: int = pydantic.Field(4096, gt=0)


class Recipe(Strict):
    name: str = "run"
    seed: int = 0
    device: str = "auto"
    output_dir: str = "runs/run"
    embed_dim: int = pydantic.Field(512, gt=0)
    modalities: dict[str, ModalitySpec]
    fusion: Component | None = None    # a shared module over both towers' tokens (e.g. shared-transformer)
    objectives: list[ObjectiveSpec] = [ObjectiveSpec(name="infonce")]
    teacher: TeacherSpec | None = None
    data: DataSpec
    optim: OptimSpec = OptimSpec()
    schedule: ScheduleSpec = ScheduleSpec()
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()

    @pydantic.field_validator("modalities")
    @classmethod
    def _two_modalities(cls, v):
        if len(v) != 2:
            raise ValueError(f"exactly two modalities are aligned, got {len(v)}: {', '.join(v) or 'none'}")
        return v

    @pydantic.field_validator("objectives")
    @classmethod
    def _some_objective(cls, v):
        if not v:
            raise ValueError("at least one objective is needed, e.g. [{name: infonce}]")
        return v

    @property
    def modality_names(self) -> tuple[str, str]:
        return tuple(self.modalities)  # type: ignore[return-value]


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.batch_size=64' -> (['train', 'batch_size'], 64); the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise RecipeError(f"Override '{text}' must look like key.sub=value (e.g. train.epochs=3).")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_override(data: dict, keys: list[str], value: Any, text: str) -> None:
    node: Any = data
    for i, k in enumerate(keys):
        last = i == len(keys) - 1
        if isinstance(node, list):
            if not k.isdigit() or int(k) >= len(node):
                raise RecipeError(f"Override '{text}': '{k}' is not an index of a {len(node)}-item list.")
            if last:
                node[int(k)] = value
            else:
                node = node[int(k)]
        elif isinstance(node, dict):
            if last:
                node[k] = value
            else:
                node = node.setdefault(k, {})
        else:
            raise RecipeError(f"Override '{text}': '{'.'.join(keys[:i])}' is a value, not a section.")


def load_recipe(path: str | Path, overrides: list[str] = (), check_plugins: bool = True) -> Recipe:
    """Read, override and validate a recipe; every error becomes one RecipeError naming the file."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"Recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of sections (modalities, data, train, ...).")
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value, text)
    try:
        recipe = Recipe.model_validate(data)
    except pydantic.ValidationError as err:
        raise RecipeError(format_validation_error(err, title=f"{path}: invalid recipe")) from None
    if check_plugins:
        problems = check_components(recipe)
        if problems:
            raise RecipeError(f"{path}: " + "; ".join(problems))
    return recipe


def check_components(recipe: Recipe) -> list[str]:
    """Resolve every named component and its options; collect all problems at once."""
    from .plugin_manager import registry

    problems: list[str] = []

    def check(kind: str, comp: Component, where: str):
        try:
            registry(kind).parse_options(comp.name, comp.options, where)
        except FuseError as exc:
            problems.append(str(exc))

    for m, spec in recipe.modalities.items():
        check("encoder", spec.encoder, f"modalities.{m}.encoder")
        check("head", spec.head, f"modalities.{m}.head")
    if recipe.teacher is not None:
        check("encoder", recipe.teacher.encoder, "teacher.encoder")
        if recipe.teacher.modality not in recipe.modalities:
            problems.append(f"teacher.modality: '{recipe.teacher.modality}' is not one of the recipe's "
                            f"modalities ({', '.join(recipe.modalities)})")
    if recipe.data.dataset is not None:
        check("dataset", recipe.data.dataset, "data.dataset")
    if recipe.fusion is not None:
        check("fusion", recipe.fusion, "fusion")
        for m, spec in recipe.modalities.items():
            try:
                cls = registry("encoder").get(spec.encoder.name).cls
            except FuseError:
                continue
            if getattr(cls, "forward_tokens") is Encoder.forward_tokens:
                problems.append(f"modalities.{m}.encoder: '{spec.encoder.name}' gives only pooled latents, but "
                                f"fusion '{recipe.fusion.name}' needs token sequences; pick an encoder with "
                                "forward_tokens or remove the fusion section")
    extras = {"teacher"} if recipe.teacher is not None else set()
    for i, obj in enumerate(recipe.objectives):
        where = f"objectives.{i}"
        check("objective", obj, where)
        try:
            entry = registry("objective").get(obj.name, where)
        except FuseError:
            continue
        if recipe.fusion is not None and getattr(entry.cls, "pooled_latents_only", False):
            problems.append(f"{where} ({obj.name}) works on pooled latents, but fusion '{recipe.fusion.name}' "
                            "hands it token sequences; remove one of the two")
        missing = set(getattr(entry.cls, "requires", ())) - extras
        for need in sorted(missing):
            problems.append(f"{where} ({obj.name}) needs '{need}', but the recipe has no `{need}:` section; "
                            f"add one, e.g. teacher: {{modality: image, encoder: {{name: timm, options: {{...}}}}}}")
    return problems
