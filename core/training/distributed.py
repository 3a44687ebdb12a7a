"""Small torch.distributed helpers: set-up under torchrun, rank checks, gathering features.

fuse scales with torch.distributed (DDP under `torchrun`), never a home-made engine. On one
process every helper is a no-op, so the training loop reads the same either way.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Re-exported: the training modules call distributed.rank(), distributed.barrier(), ... in one namespace.
from fuse.base.collectives import (  # noqa: F401
    barrier,
    gather_all,
    gather_with_grad,
    is_distributed,
    is_main,
    is_sharded,
    rank,
    world_size,
)
from fuse.base.errors import RecipeError


@dataclass(frozen=True)
class Distribution:
    """How this process takes part in a run, decided once (``decide``) and read by the loop.

    ``main``: rank 0, the process that prints, logs, writes checkpoints and exports.
    ``world``: processes in the run (1 without torchrun).
    ``chunked``: steps run GradCache (train.chunk_size with at least one online tower).
    ``sharded``: online towers are FSDP-sharded (train.fsdp, an online tower, more than one process).
    """

    main: bool
    world: int
    chunked: bool
    sharded: bool

    @classmethod
    def decide(cls, train, online: bool) -> "Distribution":
        """From the recipe's ``train`` section and whether any tower trains online (not frozen)."""
        world = world_size()
        return cls(main=is_main(), world=world, chunked=train.chunk_size is not None and online,
                   sharded=bool(train.fsdp and online and world > 1))

    @property
    def gathers(self) -> bool:
        """Ranks that evaluate and gather whole weights: rank 0, and every rank under FSDP."""
        return self.main or self.sharded

    @property
    def syncs_by_hand(self) -> bool:
        """GradCache and FSDP steps average the replicated parameters' gradients once by hand
        (fuse.training.gradcache) instead of through DDP."""
        return self.chunked or self.sharded


def setup(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); return this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def cleanup() -> None:
    """Leave the process group at the end of a run (no-op on one process)."""
    if is_distributed():
        dist.barrier()  # every rank's collectives are done before the group goes
        gc.collect()    # DDP reducers still referencing the group go first (see train's cleanup)
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, device: torch.device, find_unused: bool = False) -> torch.nn.Module:
    """DDP-wrap a module that has trainable parameters (no-op on one process). ``find_unused``: some
    trainable parameters may get no gradient (an unfrozen encoder's pooler that mean pooling skips);
    DDP then looks for them after each forward instead of waiting for them forever."""
    if not is_distributed() or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index] if device.type == "cuda" else None
    # Frozen encoders' buffers (BatchNorm statistics) are never updated: no need to broadcast them.
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False,
                                                     find_unused_parameters=find_unused)


def broadcast_params(module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (what DDP does when it wraps a module)."""
    if is_distributed():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def average_grads(params: list[torch.Tensor]) -> None:
    """Average the accumulated gradients over ranks in one all-reduce (DDP's sync, done once by hand).

    Parameters without a gradient keep none (as DDP leaves unused ones): every rank runs the
    same model and objectives, so the same parameters have gradients everywhere. FSDP-sharded
    parameters are skipped: their gradients were reduce-scattered in backward.
    """
    params = [p for p in params if p.grad is not None and not is_sharded(p.grad)]  # FSDP reduces its own
    if not is_distributed() or not params:
        return
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
        offset += n


def local_batch_size(batch_size: int, where: str) -> int:
    """This rank's share of a global batch; a world size that does not divide it is an error."""
    world = world_size()
    if batch_size % world:
        below, above = batch_size - batch_size % world, batch_size + world - batch_size % world
        raise RecipeError(f"{where}: batch size {batch_size} is not divisible by the world size {world} (processes "
                          f"launched by torchrun); use a multiple of {world}, e.g. {below or above} or {above}.")
    return batch_size // world


