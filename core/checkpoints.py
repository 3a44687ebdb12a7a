"""Per-epoch checkpoints of a run: trainable weights as safetensors, the best one, retention."""

from __future__ import annotations

import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from .errors import ModelFileError


def _frozen_prefixes(step_module: nn.Module) -> tuple[str, ...]:
    return tuple(f"model.encoders.{m}." for m in step_module.frozen)


def save_weights(step_module: nn.Module, path: Path) -> None:
    """Trainable weights only (heads, objectives, unfrozen encoders), as safetensors."""
    frozen = _frozen_prefixes(step_module)
    state = {k: v.detach().cpu().contiguous() for k, v in step_module.state_dict().items()
             if not k.startswith(frozen)}
    save_file(state, str(path))


def load_weights(step_module: nn.Module, path: Path) -> None:
    """Trainable weights saved by ``save_weights``; a file from another recipe is an error."""
    result = step_module.load_state_dict(load_file(str(path)), strict=False)
    frozen = _frozen_prefixes(step_module)
    missing = [k for k in result.missing_keys if not k.startswith(frozen)]
    if result.unexpected_keys or missing:
        raise ModelFileError(f"{path} does not fit this recipe's model (unexpected: {result.unexpected_keys[:3]}, "
                             f"missing: {missing[:3]}). Resume with the recipe the run was started with.")


def epoch_file(ckpt_dir: Path, epoch: int) -> Path:
    """The weights file an epoch writes (numbered so retention can order them)."""
    return ckpt_dir / f"epoch-{epoch:03d}.safetensors"


def keep_best(ckpt_dir: Path, epoch: int) -> None:
    """The epoch's weights become best.safetensors (what export and the final eval use)."""
    shutil.copyfile(epoch_file(ckpt_dir, epoch), ckpt_dir / "best.safetensors")


def prune_checkpoints(ckpt_dir: Path, keep: int | None) -> None:
    """Delete all but the ``keep`` newest epoch files; best.safetensors and state.pt stay, so
    resume and export still work. ``None`` keeps every epoch."""
    if keep is None:
        return
    by_epoch = sorted(ckpt_dir.glob("epoch-*.safetensors"), key=lambda p: int(p.stem.split("-")[1]))
    for old in by_epoch[:-keep]:  # by number: epoch-1000 is newer than epoch-999
        old.unlink()
