"""Checkpoints of a run (per epoch, and every N steps): trainable weights as safetensors, the best one, retention.

Every checkpoint is written atomically and records a content hash of its tensors in the
safetensors metadata (``fuse_sha256``); resume and export verify it, so a corrupted file is
named instead of silently loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fuse.base.atomic import copy_file
from fuse.base.errors import ModelFileError
from fuse.base.weights import read_checkpoint
from fuse.training.fsdp import full_state, local_state


def _frozen_prefixes(step_module: nn.Module) -> tuple[str, ...]:
    # and the base weights of LoRA'd encoders (checkpoints hold their adapters only)
    return tuple(f"model.encoders.{m}." for m in step_module.frozen) + tuple(getattr(step_module, "lora_frozen", ()))


def trainable_state(step_module: nn.Module, keep: bool = True) -> dict[str, torch.Tensor]:
    """Trainable weights only (heads, objectives, unfrozen encoders), whole, on the CPU where ``keep``
    (else {}). Under FSDP the sharded ones are gathered: every rank must call it (``fuse.training.fsdp``)."""
    return full_state(step_module, keep, skip=_frozen_prefixes(step_module))


def load_weights(step_module: nn.Module, path: Path) -> None:
    """Trainable weights saved by ``save_weights`` (hash verified); a file from another recipe is an error."""
    result = step_module.load_state_dict(local_state(step_module, read_checkpoint(path)), strict=False)
    frozen = _frozen_prefixes(step_module)
    missing = [k for k in result.missing_keys if not k.startswith(frozen)]
    if result.unexpected_keys or missing:
        raise ModelFileError(f"{path} does not fit this recipe's model (unexpected: {result.unexpected_keys[:3]}, "
                             f"missing: {missing[:3]}). Resume with the recipe the run was started with.")


def epoch_file(ckpt_dir: Path, epoch: int) -> Path:
    """The weights file an epoch writes (numbered so retention can order them)."""
    return ckpt_dir / f"epoch-{epoch:03d}.safetensors"


def step_file(ckpt_dir: Path, step: int) -> Path:
    """The weights file a checkpoint inside an epoch writes (train.checkpoint_every, SIGTERM)."""
    return ckpt_dir / f"step-{step:08d}.safetensors"


def keep_best(ckpt_dir: Path, epoch: int) -> None:
    """The epoch's weights become best.safetensors (what export and the final eval use), atomically."""
    copy_file(epoch_file(ckpt_dir, epoch), ckpt_dir / "best.safetensors")


def prune_checkpoints(ckpt_dir: Path, keep: int | None) -> None:
    """Delete all but the ``keep`` newest epoch files; best.safetensors and state.pt stay, so
    resume and export still work. ``None`` keeps every epoch."""
    if keep is None:
        return
    by_epoch = sorted(ckpt_dir.glob("epoch-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))
    for old in by_epoch[:-keep]:  # by number: epoch-1000 is newer than epoch-999
        old.unlink()
