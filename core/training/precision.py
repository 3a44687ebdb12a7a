"""Mixed precision as one small object the training loop calls: autocast, backward, step.

`auto` picks bf16 autocast on CUDA devices that support it (no loss scaling needed), else
fp32. fp16 uses a GradScaler. Gradient clipping happens here because it must see unscaled
gradients. Nothing here reads a value back from the device: the gradient norm is computed
only when clipping or asked for (logging steps), and returned as a tensor.
"""

from __future__ import annotations

import contextlib

import torch

from fuse.training.fsdp import clip_grad_norm, total_norm


class Precision:
    """The run's numeric precision: autocast, loss scaling and the optimiser step, in one object the loop calls."""

    def __init__(self, mode: str, device: torch.device):
        if mode == "auto":
            mode = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
        self.mode, self.device = mode, device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
        self.scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None

    def autocast(self):
        """The autocast context for a forward pass (none for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate, scaling the loss first under fp16."""
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, params, grad_clip: float | None,
             norm: bool = True) -> torch.Tensor | None:
        """Unscale, clip, step and zero the gradients. Returns the gradient norm as a tensor (read
        it only when logging: converting it waits for the device) when clipping or ``norm``;
        otherwise None, and the norm is not computed at all."""
        if self.scaler:
            self.scaler.unscale_(optimizer)
        total = None
        if grad_clip:  # torch's own for plain gradients; also FSDP's mix of sharded and plain (fuse.training.fsdp)
            total = clip_grad_norm(params, grad_clip)
        elif norm:
            total = total_norm([p.grad for p in params if p.grad is not None])
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return total
