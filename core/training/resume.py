"""Resuming an interrupted run: the training state saved after every epoch and every
``train.checkpoint_every`` steps (and on SIGTERM, see ``fuse.training.preempt``).

`checkpoints/epoch-NNN.safetensors` (or, inside an epoch, `step-NNNNNNNN.safetensors`) holds the
trainable weights; `checkpoints/state.pt` names that file and holds
the rest of what the next step depends on: optimiser moments, the schedule's position, the
loss scaler, the RNG (dropout, FuseMix's lambda), the best score so far, and the state of any
module that keeps one outside its weights (``resume_state()`` / ``load_resume_state()``, e.g.
a distillation memory bank). Batches are a function of the step, so a run resumed after any
step continues exactly as an uninterrupted one would. The weights are written before state.pt
and the previous step file is deleted only after it, so a kill at any point (kill -9 during a
write included) leaves a state.pt whose weights file exists and matches it.
Loaded with ``weights_only=True``: a state file can hold tensors and numbers, never code.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import yaml

from fuse.base.atomic import atomic_path
from fuse.base.errors import ModelFileError, RecipeError
from fuse.training.fsdp import local_optimizer_state

STATE_FILE = "state.pt"

# Recipe fields a resumed run may change: how long it runs and how it reports, never what it
# trains or on what (anything else changes the model or the data, so the checkpoint would not fit).
HARMLESS = ("name", "device", "output_dir", "train.epochs", "train.max_steps", "train.eval_every", "train.log_every",
            "train.keep_checkpoints", "train.checkpoint_every", "train.on_nonfinite", "train.export_on_failure",
            "data.num_workers", "data.encode_batch_size", "eval.chunk_size")


def _flatten(d, prefix: str = "") -> dict[str, object]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: d}


def check_resume_recipe(run_dir: Path, recipe) -> list[str]:
    """Compare the run's stored recipe.yaml with ``recipe`` field by field: differences that change the
    model or the data are refused (all listed at once); harmless ones are returned to be said."""
    stored_file = Path(run_dir) / "recipe.yaml"
    if not stored_file.exists():
        raise ModelFileError(f"Nothing to resume: {stored_file} not found. Run without --resume to start afresh.")
    try:
        stored = _flatten(yaml.safe_load(stored_file.read_text()))
    except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as exc:
        raise ModelFileError(f"{stored_file} is corrupt ({exc}); the run cannot be resumed.") from None
    new = _flatten(recipe.model_dump(mode="json"))
    changed = sorted(k for k in stored.keys() | new.keys() if stored.get(k, "<unset>") != new.get(k, "<unset>"))
    describe = [f"{k}: {stored.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}" for k in changed]
    refused = [d for k, d in zip(changed, describe) if k not in HARMLESS]
    if refused:
        raise RecipeError(f"Cannot resume {run_dir}: the recipe differs in fields that change the model or the data "
                          f"({'; '.join(refused)}). Resume with the recipe the run was started with, or give a new "
                          "output_dir to start a new run.")
    return describe


def module_states(root: torch.nn.Module) -> dict[str, dict]:
    """``resume_state()`` of every sub-module that has one, by module name."""
    return {name: m.resume_state() for name, m in root.named_modules() if hasattr(m, "resume_state")}


def save_state(ckpt_dir: Path, *, weights: Path, epoch: int, step: int, best: float, best_epoch: int | None,
               optimizer_state: dict, scheduler, precision, modules: torch.nn.Module, skipped_steps: int = 0) -> None:
    """Write state.pt atomically once ``weights`` (already written) hold step ``step``: what the next
    step depends on besides the weights. ``epoch`` counts the epochs completed; ``optimizer_state``
    has whole tensors (``fuse.training.fsdp.full_optimizer_state``); ``skipped_steps`` counts the steps
    ``train.on_nonfinite: skip_step`` dropped so far. Step files that state.pt no longer
    names are deleted afterwards."""
    # Test hook (tests/test_preemption.py): a pause here lets a kill -9 land between the two writes.
    time.sleep(float(os.environ.get("FUSE_TEST_PAUSE_BEFORE_STATE", "0")))
    state = {"epoch": epoch, "step": step, "weights_file": Path(weights).name, "best": best, "best_epoch": best_epoch,
             "skipped_steps": skipped_steps,
             "modules": module_states(modules),
             "optimizer": optimizer_state, "scheduler": scheduler.state_dict(),
             "scaler": precision.scaler.state_dict() if precision.scaler else None,
             "rng": torch.get_rng_state(),
             "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}
    with atomic_path(ckpt_dir / STATE_FILE) as tmp:  # an interruption never leaves half a state
        torch.save(state, tmp)
    for old in ckpt_dir.glob("step-*.safetensors"):
        if old.name != state["weights_file"]:
            old.unlink(missing_ok=True)


def load_state(ckpt_dir: Path) -> dict:
    """The state to resume from, with the path of its epoch's weights; missing or corrupt files are clear errors."""
    path = ckpt_dir / STATE_FILE
    if not path.exists():
        raise ModelFileError(f"Nothing to resume: {path} not found (the run saves it after each epoch and "
                             "every train.checkpoint_every steps). "
                             "Run without --resume to start afresh, or fix output_dir.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        weights = ckpt_dir / state.get("weights_file", f"epoch-{state['epoch']:03d}.safetensors")
    except Exception as exc:
        raise ModelFileError(f"{path} is corrupt ({exc}); delete it and start without --resume.") from None
    if not weights.exists():
        raise ModelFileError(f"{path} resumes after step {state['step']} but {weights} is missing.")
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
    optimizer.load_state_dict(local_optimizer_state(optimizer, state["optimizer"]))  # FSDP: this rank's shards
    scheduler.load_state_dict(state["scheduler"])
    if precision.scaler and state["scaler"]:
        precision.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
