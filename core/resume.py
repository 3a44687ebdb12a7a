"""Resuming an interrupted run: the training state saved after every epoch.

`checkpoints/epoch-NNN.safetensors` holds the trainable weights; `checkpoints/state.pt` holds
the rest of what the next step depends on: optimiser moments, the schedule's position, the
loss scaler, the RNG (dropout, FuseMix's lambda), the best score so far, and the state of any
module that keeps one outside its weights (``resume_state()`` / ``load_resume_state()``, e.g.
a distillation memory bank). Batches are a function of (seed, epoch), so a resumed run
continues exactly as an uninterrupted one would.
Loaded with ``weights_only=True``: a state file can hold tensors and numbers, never code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import ModelFileError

STATE_FILE = "state.pt"


def module_states(root: torch.nn.Module) -> dict[str, dict]:
    """``resume_state()`` of every sub-module that has one, by module name."""
    return {name: m.resume_state() for name, m in root.named_modules() if hasattr(m, "resume_state")}


def save_state(ckpt_dir: Path, *, epoch: int, step: int, best: float, best_epoch: int | None,
               optimizer, scheduler, precision, modules: torch.nn.Module) -> None:
    """Write state.pt atomically after an epoch: what the next step depends on besides the weights."""
    state = {"epoch": epoch, "step": step, "best": best, "best_epoch": best_epoch,
             "modules": module_states(modules),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "scaler": precision.scaler.state_dict() if precision.scaler else None,
             "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    tmp = ckpt_dir / f"{STATE_FILE}.tmp{os.getpid()}"
    torch.save(state, tmp)
    tmp.replace(ckpt_dir / STATE_FILE)  # atomic: an interruption never leaves half a state


def load_state(ckpt_dir: Path) -> dict:
    """The state to resume from, with the path of its epoch's weights; missing or corrupt files are clear errors."""
    path = ckpt_dir / STATE_FILE
    if not path.exists():
        raise ModelFileError(f"Nothing to resume: {path} not found (the run saves it after each epoch). "
                             "Run without --resume to start afresh, or fix output_dir.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        weights = ckpt_dir / f"epoch-{state['epoch']:03d}.safetensors"
    except Exception as exc:
        raise ModelFileError(f"{path} is corrupt ({exc}); delete it and start without --resume.") from None
    if not weights.exists():
        raise ModelFileError(f"{path} resumes after epoch {state['epoch']} but {weights} is missing.")
    state["weights"] = weights
    return state


def restore(state: dict, optimizer, scheduler, precision, modules: torch.nn.Module) -> None:
    """Optimiser, schedule, scaler, RNG and module states as they were when ``state`` was saved."""
    by_name = dict(modules.named_modules())
    for name, module_state in state.get("modules", {}).items():
        if name not in by_name or not hasattr(by_name[name], "load_resume_state"):
            raise ModelFileError(f"state.pt holds the state of '{name}', which this recipe does not build. "
                                 "Resume with the recipe the run was started with.")
        try:
            by_name[name].load_resume_state(module_state)
        except ValueError as exc:
            raise ModelFileError(f"state.pt does not fit '{name}': {exc}. Resume with the recipe the run "
                                 "was started with.") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if precision.scaler and state["scaler"]:
        precision.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
