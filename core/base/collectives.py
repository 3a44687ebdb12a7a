"""What a process knows about distribution: its rank, the world size, gathering features across ranks,
and whether a tensor is FSDP-sharded.

Every helper is a no-op on one process, so objectives, the latent store and the training loop read the
same either way. Objectives gather with ``fuse.gather_with_grad``/``fuse.gather_all`` (the plugin
surface); setting up process groups and wrapping models is the training package's
(``fuse.training.distributed``, ``fuse.training.fsdp``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    """True inside an initialised process group (torchrun), so helpers can be no-ops otherwise."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 on one process)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together (1 on one process)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the process that logs, evaluates and writes files."""
    return rank() == 0


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        """Identity; remembers the factor for backward."""
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        """Scale this rank's gradient by the world size (see gather_with_grad)."""
        return grad * ctx.factor, None


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of ``x`` concatenated; this rank's slice keeps its gradient.

    Convention: objectives compute the *global* loss from gathered tensors, identical on every
    rank. A rank can only backpropagate through its own rows, so their gradient is scaled by
    the world size: after DDP averages over ranks, every parameter gets exactly the
    single-process, full-batch gradient (parameters used outside the gather, such as the
    temperature, get the full gradient on every rank and are averaged unchanged).
    """
    if not is_distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[rank()] = _ScaleGrad.apply(x, world_size())
    return torch.cat(parts, dim=0)


def gather_all(x: torch.Tensor) -> torch.Tensor:
    """All ranks' rows of ``x`` concatenated, with gradients flowing back to every rank.

    Backward sums each rank's gradient for a row on the rank that owns it (a reduce-scatter):
    what a *local* loss needs (each rank's loss over its own rows against all columns, as
    open_clip's ``local_loss``), where other ranks' losses depend on this rank's rows.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def barrier() -> None:
    """Wait for every rank (no-op on one process)."""
    if is_distributed():
        dist.barrier()


def _dtensor():
    from torch.distributed.tensor import DTensor

    return DTensor


def is_sharded(t) -> bool:
    """A DTensor: a parameter (or its gradient or moment) that FSDP split over ranks."""
    return isinstance(t, _dtensor())


def any_sharded(module: nn.Module) -> bool:
    """Whether any of ``module``'s parameters is FSDP-sharded."""
    return any(is_sharded(p) for p in module.parameters())
