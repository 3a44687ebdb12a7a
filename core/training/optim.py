"""AdamW with open_clip's parameter groups, and a warmup + cosine schedule.

Scalars, norms and biases (parameters with ndim <= 1, such as the log temperature) get no
weight decay: decided by shape, never by matching parameter names. Unfrozen encoders train
at their own (smaller) learning rate.
"""

from __future__ import annotations

import math

import torch


def param_groups(modules: dict[str, list[torch.nn.Module]], lr: float, encoder_lr: float, weight_decay: float):
    """AdamW groups: weight decay only on matrices, and unfrozen encoders at their own learning rate."""
    groups = []
    for role, mods in modules.items():
        params = [p for m in mods for p in m.parameters() if p.requires_grad]
        group_lr = encoder_lr if role == "encoders" else lr
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        if decay:
            groups.append({"params": decay, "weight_decay": weight_decay, "lr": group_lr, "name": f"{role}/decay"})
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0, "lr": group_lr, "name": f"{role}/no_decay"})
    return groups


FUSED_DEVICES = ("cpu", "cuda")  # where torch's fused AdamW kernel runs (CPU since torch 2.4)


def make_optimizer(groups, betas, eps) -> torch.optim.AdamW:
    """AdamW over the groups: the fused kernel (one pass over all parameters per step) when every
    parameter is a float tensor on one CPU or CUDA device, else the multi-tensor (foreach) one."""
    params = [p for g in groups for p in g["params"]]
    devices = {p.device for p in params}
    fused = (len(devices) == 1 and next(iter(devices)).type in FUSED_DEVICES
             and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64) for p in params))
    return torch.optim.AdamW(groups, betas=tuple(betas), eps=eps, **({"fused": True} if fused else {"foreach": True}))


def warmup_cosine(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """Linear warmup from ~0 to each group's lr, then cosine decay to min_lr_ratio * lr."""
    def factor(step: int) -> float:
        """The learning-rate multiplier at a step."""
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
