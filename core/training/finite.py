"""Non-finite training, caught without a host sync per step.

Each step ``check`` reduces ``isfinite`` of every loss term, the total loss and the gradient
norms into one on-device flag and remembers, still on the device, the first step that failed
and which parts did. The loop reads it (``failure``) only at logging steps and before every
checkpoint, so a bad step never reaches a checkpoint and the GPU is not stalled each step.
``train.on_nonfinite: skip_step`` instead drops a bad step's update; that decision needs the
flag on the host, so it costs one sync per step (all-reduced under DDP so ranks stay in step).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from fuse.base.collectives import is_sharded
from fuse.training import distributed
from fuse.training.fsdp import total_norm


class NonFiniteGuard:
    """On-device record of the first step whose loss terms, loss or gradients were NaN or Inf."""

    def __init__(self, mode: str, device: torch.device, check_grads: bool = True):
        self.mode, self.check_grads = mode, check_grads  # fp16: the loss scaler already skips inf gradients
        self.first_bad = torch.zeros((), dtype=torch.long, device=device)  # 0: every step so far was finite
        self.parts: list[str] = []
        self.bad_parts: torch.Tensor | None = None
        self.skipped = 0

    def check(self, step: int, loss: torch.Tensor, terms: dict[str, torch.Tensor], params) -> torch.Tensor:
        """After backward, before the optimiser step: a 0-d bool tensor, True when step ``step`` is finite."""
        flags = [torch.isfinite(t.detach()).all() for t in terms.values()] + [torch.isfinite(loss.detach()).all()]
        names = [f"loss term '{k}'" for k in terms] + ["the total loss"]
        grads = [p.grad for p in params if p.grad is not None]
        if self.check_grads and grads:
            if any(is_sharded(g) for g in grads):  # FSDP: the norm over every rank's shards
                flags.append(torch.isfinite(total_norm(grads)))
            else:
                flags.append(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all())
            names.append("the gradients")
        each = torch.stack(flags)
        ok = each.all()
        if self.bad_parts is None or len(names) != len(self.parts):
            self.parts, self.bad_parts = names, torch.zeros_like(each)
        first = (self.first_bad == 0) & ~ok
        self.first_bad = torch.where(first, torch.full_like(self.first_bad, step), self.first_bad)
        self.bad_parts = torch.where(first, ~each, self.bad_parts)
        return ok

    def skip(self, ok: torch.Tensor) -> bool:
        """skip_step mode: whether to drop this step's update (one host read, agreed across ranks)."""
        if self.mode != "skip_step":
            return False
        ok = ok.to(torch.int32)
        if distributed.is_distributed():
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        if bool(ok):
            return False
        self.skipped += 1
        return True

    def failure(self) -> tuple[int, list[str]] | None:
        """stop mode: (first bad step, the parts that were not finite) once a step failed, else None."""
        if self.mode != "stop":
            return None
        first = self.first_bad.clone()
        if distributed.is_distributed():  # a rank whose own loss failed stops every rank
            dist.all_reduce(first, op=dist.ReduceOp.MAX)
        step = int(first)  # the host read: only at logging steps and before checkpoints
        if step == 0:
            return None
        bad = [n for n, b in zip(self.parts, self.bad_parts.tolist()) if b] if self.bad_parts is not None else []
        return step, bad or ["the loss on another rank"]


def likely_cause(lr: float, parts: list[str]) -> str:
    """The most likely reason for a non-finite step, as advice."""
    if lr >= 0.1:
        return f"the learning rate optim.lr={lr:g} is far too high; lower it (1e-4 to 1e-2 is usual)"
    if parts == ["the gradients"]:
        return (f"the gradients overflowed: lower optim.lr (now {lr:g}) or set optim.grad_clip, or use "
                "precision bf16/fp32")
    return (f"a learning rate too high for this data (optim.lr={lr:g}), a temperature that collapsed "
            "(the objective's temperature options), or non-finite inputs in the data")


def diverged_message(step: int, parts: list[str], lr: float, kept: str) -> str:
    """One line: the first bad step, what failed, the likely cause and what the run dir keeps."""
    return (f"Training stopped: {' and '.join(parts)} became NaN/Inf at step {step} (the first bad step). "
            f"Likely cause: {likely_cause(lr, parts)}. {kept}")
