"""Recipes: one YAML file per experiment, validated with pydantic, overridable from the CLI.

A recipe names every component by its registered name (``encoder: {name: timm, ...}``), never
an import path, so loading a recipe can only build what installed plugins registered. All
errors in a recipe are collected into one message naming the file and the field paths.

Names: a ``*Section`` is a raw recipe section as written (``EncoderSection``, ``TrainSection``);
``fuse.recipes.spec.Spec`` is a component resolved from one, and ``fuse.recipes.plan`` holds
the resolved plan (``TowerPlan``, ``PairPlan``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from fuse.base.errors import RecipeError, decode_utf8
from fuse.base.options import Options as Strict
from fuse.base.urls import is_pipe, redact_source
from fuse.base.validation import format_validation_error
from fuse.recipes.strict_yaml import load_strict, parse_strict


class Component(Strict):
    """A registered component and its options."""

    name: str
    options: dict[str, Any] = {}


class LoraSection(Strict):
    """LoRA adapters (peft) on the encoder's layers whose module names match ``target``; only they train."""
    r: int = pydantic.Field(8, gt=0)
    alpha: float = pydantic.Field(16.0, gt=0)
    dropout: float = pydantic.Field(0.0, ge=0, lt=1)
    target: list[str] = pydantic.Field(["*"], min_length=1)   # globs over module names; "*": every Linear, Embedding
    # and ungrouped Conv (grouped/depthwise convolutions are never wrapped: fuse.training.lora.wrappable)


class EncoderSection(Component):
    """A modality's encoder: registered name, options, and whether (or which parts) it trains."""
    frozen: bool = True  # frozen encoders are run once and their latents cached
    # With frozen: false, train only the parameters whose names match one of these globs
    # (partly unfrozen, e.g. ["model.encoder.layer.5.*"]); None trains the whole encoder.
    trainable: list[str] | None = None
    lora: LoraSection | None = None   # with frozen: false, train LoRA adapters instead of the encoder's weights

    @pydantic.model_validator(mode="after")
    def _trainable_needs_unfrozen(self):
        if self.trainable is not None and self.frozen:
            raise ValueError("trainable names parameters to fine-tune, so it needs frozen: false")
        if self.lora is not None and (self.frozen or self.trainable is not None):
            raise ValueError("lora trains adapters in a running encoder: give frozen: false and no trainable")
        if self.trainable is not None and not self.trainable:
            raise ValueError("trainable: give at least one parameter-name pattern, or leave it out to train all")
        return self


class ModalitySection(Strict):
    """One tower of the recipe: its encoder and head."""
    encoder: EncoderSection
    head: Component = Component(name="residual-mlp")


Pair = tuple[str, str]


class ObjectiveSection(Component):
    """An objective: registered name, options, loss weight and the pair of modalities it aligns."""
    weight: float = 1.0
    pair: Pair | None = None  # the two modalities it aligns; may be left out when the recipe has two


class ExtraSection(Strict):
    """A frozen encoder whose latents of one modality reach objectives as step.extras[<its name>]."""

    modality: str
    encoder: Component


class Source(Strict):
    """Where pairs come from: a registered dataset builder, or JSONL manifests."""

    dataset: Component | None = None   # a registered dataset builder that writes the manifests
    # or explicit JSONL manifests, or tar shards: a brace pattern (a-{000..009}.tar) or a list
    train: str | list[str] | None = None
    val: str | list[str] | None = None
    train_split: str = "train"         # which of a dataset's built splits to train / validate on
    val_split: str | None = "val"

    @property
    def given(self) -> bool:
        """Whether this source names any data at all."""
        return self.dataset is not None or self.train is not None


class PairSection(Source):
    """Per-pair settings; its own source replaces data's for this pair."""

    modalities: Pair
    batch_size: int | None = pydantic.Field(None, gt=1)   # default: train.batch_size
    # This pair's share of each step's loss (multiplies its objectives' weights): the expected
    # gradient of drawing the pair with that probability, without the variance.
    weight: float = pydantic.Field(1.0, gt=0)


class RemoteSection(Strict):
    """How remote shards (https://, s3://, gs://, pipe:) are read (docs/scale.md, "Remote shards")."""
    retries: int = pydantic.Field(3, ge=0, le=20)        # more attempts after a transient fault
    timeout_s: float = pydantic.Field(60.0, gt=0)        # the longest wait for bytes (a stalled server)
    backoff_s: float = pydantic.Field(1.0, ge=0)         # wait before the first retry, doubled each time
    # A shard still unreadable while indexing: stop the run, or skip it and count it. Encoding always
    # stops (a rerun resumes with the shards still missing).
    on_error: Literal["stop", "skip"] = "stop"


class DataSection(Source):
    """The default data source plus caching, loading and per-pair settings."""
    cache_dir: str | None = None       # default: $FUSE_CACHE or ~/.cache/fuse
    cache_latents: bool = True
    # Frozen latents on the training device: "auto" when they fit (half its free memory), else
    # gathered per step from the memory-mapped latent store (prefetched; pinned on CUDA).
    latents_on_device: Literal["auto"] | bool = "auto"
    latent_dtype: Literal["float32", "float16"] = "float32"   # how pooled latents are stored (and held)
    shard_rows: int = pydantic.Field(65536, gt=0)             # rows per latent-store shard (bounds host memory)
    encode_batch_size: int = pydantic.Field(64, gt=0)
    num_workers: int = pydantic.Field(0, ge=0)
    # An unreadable, empty or silent-only image/audio file: stop naming it ("error"), or leave
    # out the pairs that use it and list it in <output_dir>/skipped_media.txt ("skip").
    bad_media: Literal["error", "skip"] = "error"
    # Larger images are refused from their header before decoding (a decompression bomb); PIL's default.
    max_image_pixels: int = pydantic.Field(89_478_485, gt=0)
    # Train on this share of the training items (0 < f <= 1) for data-scaling curves: chosen by a hash of
    # (seed, item), so it is the same under the same seed and each smaller share is inside each larger one.
    fraction: float = pydantic.Field(1.0, gt=0, le=1)
    pairs: list[PairSection] = []         # per-pair sources, batch sizes and weights
    remote: RemoteSection = RemoteSection()


class OptimSection(Strict):
    """AdamW settings."""
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)   # each in [0, 1)
    eps: float = pydantic.Field(1e-6, gt=0)
    encoder_lr: float | None = None  # learning rate for unfrozen encoders (default: lr / 10)
    grad_clip: float | None = pydantic.Field(None, gt=0)

    @pydantic.field_validator("betas")
    @classmethod
    def _betas_in_range(cls, v):
        if not all(0 <= b < 1 for b in v):
            raise ValueError(f"each beta must be in [0, 1), e.g. [0.9, 0.98]; got {list(v)}")
        return v


class ScheduleSection(Strict):
    """Warmup and cosine decay of the learning rate."""
    warmup_steps: int = pydantic.Field(0, ge=0)
    min_lr_ratio: float = pydantic.Field(0.0, ge=0, le=1)


class TrainSection(Strict):
    """Batches, length, precision, logging, evaluation cadence and checkpoint retention."""
    batch_size: int = pydantic.Field(256, gt=1)
    epochs: int = pydantic.Field(10, gt=0)
    # What one epoch is when several pairs train together: one pass over the largest (or the
    # smallest) pair's training set, or over a named pair's ([audio, text]); the others cycle.
    epoch: Literal["largest", "smallest"] | Pair = "largest"
    max_steps: int | None = pydantic.Field(None, gt=0)
    grad_accum: int = pydantic.Field(1, gt=0)        # micro-batches per step; adds no negatives
    # GradCache: online encoders run this many rows (per process) at a time, the loss still sees
    # the whole batch_size (docs/large-batches.md). None: the whole batch at once.
    chunk_size: int | None = pydantic.Field(None, gt=0)
    # FSDP2 under torchrun: each rank keeps 1/world of every unfrozen encoder's weights, gradients
    # and AdamW moments (fuse.training.fsdp, docs/scale.md). No effect on one process or frozen towers.
    fsdp: bool = False
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    log_every: int = pydantic.Field(10, gt=0)
    eval_every: int = pydantic.Field(1, gt=0)  # epochs
    best_metric: str = "mean/R@1"             # a key of the val metrics; ranks (..._rank): lower is better
    drop_last: bool = True
    # Recent epoch checkpoints kept besides best.safetensors and state.pt; null keeps them all.
    # One per epoch of a long run fills a disk (open_clip's --delete-previous-checkpoint).
    keep_checkpoints: int | None = pydantic.Field(1, ge=1)
    # Also checkpoint every N optimiser steps inside an epoch (long epochs on preemptible nodes);
    # only the newest such step file is kept. null: after each epoch only.
    checkpoint_every: int | None = pydantic.Field(None, gt=0)
    # A NaN/Inf loss or gradient: stop (roll back to the last good checkpoint, say why), or
    # skip_step (drop that step's update, count it in metrics.jsonl; one host sync per step).
    on_nonfinite: Literal["stop", "skip_step"] = "stop"
    export_on_failure: bool = True  # on stop, export the best good checkpoint to <output_dir>/export

    @pydantic.model_validator(mode="after")
    def _fsdp_precision(self):
        if self.fsdp and self.precision == "fp16":
            raise ValueError("train.fsdp with precision fp16: fp16's loss scaler cannot unscale FSDP-sharded "
                             "gradients here; use precision bf16 (or fp32, or auto)")
        return self


class EvalSection(Strict):
    """Validation retrieval: which recall@K, the memory bound, extra pairs."""
    ks: tuple[int, ...] = (1, 5, 10)
    chunk_size: int = pydantic.Field(4096, gt=0)
    # Pairs evaluated besides the trained ones, on data's val split (e.g. [[audio, image]] when
    # only audio-text and image-text are trained: retrieval between towers never paired).
    pairs: list[Pair] = []

    @pydantic.field_validator("ks")
    @classmethod
    def _ks_positive(cls, v):
        if not v or any(k < 1 for k in v) or len(set(v)) != len(v):
            raise ValueError(f"give distinct positive ranks, e.g. [1, 5, 10]; got {list(v)}")
        return v


class Recipe(Strict):
    """One experiment: towers, objectives, data and training settings (docs/recipes.md)."""
    name: str = "run"
    seed: int = pydantic.Field(0, ge=0, le=2**63 - 1)  # torch takes 64-bit seeds
    device: str = "auto"
    output_dir: str = "runs/run"
    embed_dim: int = pydantic.Field(512, gt=0)
    # An exported model whose towers join this one frozen (bind one more modality later).
    base_model: str | None = None
    modalities: dict[str, ModalitySection]
    fusion: Component | None = None    # a module shared by every tower's tokens (e.g. shared-transformer)
    objectives: list[ObjectiveSection] = [ObjectiveSection(name="infonce")]
    extras: dict[str, ExtraSection] = {}  # named frozen encoders, e.g. a distillation teacher
    teacher: ExtraSection | None = None   # the same as extras: {teacher: ...}
    data: DataSection
    optim: OptimSection = OptimSection()
    schedule: ScheduleSection = ScheduleSection()
    train: TrainSection = TrainSection()
    eval: EvalSection = EvalSection()
    # Experiment trackers (tensorboard, wandb, mlflow, or a plugin's), by name or with options; `jsonl` names
    # metrics.jsonl, which is always written (plots, resume and reports read it). `logging` is the old key.
    trackers: list[str | Component] = ["jsonl"]

    # The pipe: shard entries this run may run: those given on the command line (or all, with
    # --allow-pipe), never one a recipe file names by itself (fuse.recipes.recipe.load_recipe).
    _commands: frozenset[str] = pydantic.PrivateAttr(default=frozenset())

    def permit_commands(self, commands: set[str]) -> None:
        """Let these ``pipe:`` entries run ("*": every one); ``load_recipe`` calls it with the command line's."""
        self._commands = frozenset(commands)

    def allows(self, command: str) -> bool:
        """Whether the ``pipe:`` shard entry ``command`` may run (see ``_commands``)."""
        return "*" in self._commands or command in self._commands

    def public_dump(self) -> dict:
        """The recipe as JSON-able data with the URLs of its data sources redacted: what run folders,
        trackers and exports record (a URL's userinfo or query may hold a secret)."""
        out = self.model_dump(mode="json")
        for source in [out["data"], *out["data"]["pairs"]]:
            for split in ("train", "val"):
                source[split] = redact_source(source[split])
        return out

    @pydantic.field_validator("objectives")
    @classmethod
    def _some_objective(cls, v):
        if not v:
            raise ValueError("at least one objective is needed, e.g. [{name: infonce}]")
        return v

    @pydantic.model_validator(mode="after")
    def _teacher_is_an_extra(self):
        if self.teacher is not None:
            if "teacher" in self.extras:
                raise ValueError("give the teacher once: either teacher: or extras: {teacher: ...}")
            self.extras = {**self.extras, "teacher": self.teacher}
            self.teacher = None  # kept once, under extras (recipe.yaml of a run reloads as it was)
        return self


OLD_KEYS = {"logging": "trackers"}  # old top-level names still accepted in overrides


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.batch_size=64' -> (['train', 'batch_size'], 64); the value is parsed as YAML.
    'trackers+=[wandb]' keeps the '+' on the last key: append to that list (``apply_override``)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise RecipeError(f"Override '{text}' must look like key.sub=value (e.g. train.epochs=3).")
    try:
        parsed = load_strict(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    keys = key.split(".")
    keys[0] = OLD_KEYS.get(keys[0], keys[0])
    return keys, parsed


def apply_override(data: dict, keys: list[str], value: Any, text: str) -> None:
    """Set one `key.sub=value` override in the raw recipe dict (list items by index); `key+=[a, b]` appends
    to a list the items it does not hold yet (by value, or by name for `{name: ...}` entries)."""
    if keys[-1].endswith("+"):
        keys = [*keys[:-1], keys[-1][:-1]]
        value = _appended(_get(data, keys) or [], value, text)
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


def _get(data: dict, keys: list[str]) -> Any:
    """The raw value at ``keys`` (None where a section is absent)."""
    for k in keys:
        data = data.get(k) if isinstance(data, dict) else None
    return data


def _appended(current: Any, extra: Any, text: str) -> list:
    """``current`` plus the items of ``extra`` it does not hold yet."""
    if not isinstance(current, list):
        raise RecipeError(f"Override '{text}': '+=' appends to a list, and this field holds {type(current).__name__}.")
    def name(e):
        return e.get("name") if isinstance(e, dict) else e

    out = list(current)
    for e in extra if isinstance(extra, list) else [extra]:
        if name(e) not in {name(o) for o in out}:
            out.append(e)
    return out


def load_recipe(path: str | Path, overrides: list[str] = (), allow_pipe: bool = False) -> Recipe:
    """Read, override and validate a recipe's fields; every error becomes one RecipeError naming the file.
    Plugins, pairs and data sources are checked when it is resolved (``fuse.recipes.plan.load_plan``).
    A ``pipe:`` shard entry runs a command, so only those given in ``overrides`` may run (or every
    one, with ``allow_pipe``): a recipe file alone never runs one."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"Recipe file not found: {path}")
    data = parse_strict(decode_utf8(path.read_bytes(), path, RecipeError), path) or {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of sections (modalities, data, train, ...).")
    for old, new in OLD_KEYS.items():  # before overrides, which use the new names
        if old in data:
            if new in data:
                raise RecipeError(f"{path}: give `{new}` once (`{old}` is its old name).")
            data[new] = data.pop(old)
    commands = {"*"} if allow_pipe else set()
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value, text)
        commands |= {v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and is_pipe(v)}
    try:
        recipe = Recipe.model_validate(data)
    except pydantic.ValidationError as err:
        raise RecipeError(format_validation_error(err, title=f"{path}: invalid recipe")) from None
    recipe.permit_commands(commands)
    return recipe
