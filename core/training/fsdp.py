"""FSDP2 for unfrozen encoders (``train.fsdp``): under torchrun each rank keeps 1/world of an
online encoder's weights, gradients and AdamW moments, and gathers a block's weights only while
that block runs.

Why only the encoders: they are what outgrows one GPU once unfrozen (a ViT-L or a large text
model, its gradients and two AdamW moments per weight). Heads, objectives and a fusion block are
small; they stay replicated and their gradients are averaged over ranks once per step by hand,
as GradCache steps do (``distributed.average_grads``). Each repeated block of an encoder (the
members of a ModuleList/Sequential of identical layers: transformer layers, ViT blocks) is its
own FSDP unit, so one block's full weights are alive at a time; the rest of the encoder
(embeddings, final norm) is the root unit.

Files do not change with FSDP: checkpoints and state.pt hold full tensors, gathered on every
rank (a collective, so every rank calls these helpers) and written by rank 0; loading cuts each
rank's shard out of the full tensor locally. After training, rank 0 evaluates and exports with
plain copies of the encoders (``unshard_encoders``).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn

from fuse.base.collectives import any_sharded, is_sharded  # noqa: F401  (any_sharded: fsdp's users ask it here)


def blocks(encoder: nn.Module) -> list[nn.Module]:
    """The encoder's repeated blocks: members of a ModuleList/Sequential of at least two modules of
    one class that hold parameters (outermost such lists; their insides are not split further)."""
    found: list[nn.Module] = []
    taken: set[int] = set()
    for module in encoder.modules():
        if id(module) in taken:
            for child in module.children():
                taken.add(id(child))
            continue
        if isinstance(module, (nn.ModuleList, nn.Sequential)):
            children = list(module.children())
            if (len(children) >= 2 and len({type(c) for c in children}) == 1
                    and all(any(True for _ in c.parameters()) for c in children)):
                found.extend(children)
                taken.update(id(c) for c in children)
    return found


def shard_encoders(encoders: dict[str, nn.Module]) -> dict[str, int]:
    """fully_shard each encoder's blocks, then the encoder itself, over the default process group;
    returns the number of blocks per encoder. Call before the optimiser is built (it replaces the
    parameters by DTensors)."""
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    counts = {}
    for name, encoder in encoders.items():
        units = blocks(encoder)
        for unit in units:
            fully_shard(unit)
        fully_shard(encoder)
        register_fsdp_forward_method(encoder, "forward_tokens")  # a fusion's path into the encoder
        counts[name] = len(units)
    return counts


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor (gathered from every rank when sharded: a collective)."""
    return t.full_tensor() if is_sharded(t) else t


def whole_on_cpu(t: torch.Tensor, keep: bool = True) -> torch.Tensor | None:
    """The whole tensor, on the CPU, where ``keep`` (else None). A sharded one is gathered on every
    rank (each must call this), one tensor at a time, so the device never holds more than one whole."""
    whole = full(t)
    return whole.detach().cpu().contiguous() if keep else None


def full_state(module: nn.Module, keep: bool = True, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` (less the names starting with a ``skip`` prefix) whole and on the CPU
    where ``keep``; elsewhere {} (see ``whole_on_cpu``)."""
    state = {k: whole_on_cpu(v, keep) for k, v in module.state_dict().items() if not k.startswith(skip)}
    return state if keep else {}


def _shard_like(value: torch.Tensor, like) -> torch.Tensor:
    """This rank's shard of the full tensor ``value``, placed as ``like`` (no communication)."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(value.to(like.device, like.dtype), like.device_mesh, like.placements, src_data_rank=None)


def local_state(module: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A full-tensor state dict made loadable into ``module``: entries whose parameter is sharded
    become this rank's shard (the others, and every entry of an unsharded module, pass unchanged)."""
    current = module.state_dict()
    return {k: _shard_like(v, current[k]) if k in current and is_sharded(current[k]) else v
            for k, v in state.items()}


def _indexed_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Parameters in the order ``optimizer.state_dict()`` numbers them."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def full_optimizer_state(optimizer: torch.optim.Optimizer, keep: bool = True) -> dict | None:
    """``optimizer.state_dict()`` with whole moments on the CPU where ``keep``; elsewhere None (see
    ``whole_on_cpu``: a collective when any parameter is sharded)."""
    state = optimizer.state_dict()
    moments = {i: {k: whole_on_cpu(v, keep) if torch.is_tensor(v) else v for k, v in s.items()}
               for i, s in state["state"].items()}
    return {**state, "state": moments} if keep else None


def local_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """A full-tensor optimiser state made loadable: moments of sharded parameters become this rank's shard."""
    params = _indexed_params(optimizer)
    out = dict(state)
    out["state"] = {}
    for i, s in state["state"].items():
        p = params[int(i)] if int(i) < len(params) else None
        out["state"][i] = {k: _shard_like(v, p) if p is not None and is_sharded(p) and v.shape == p.shape else v
                           for k, v in s.items()}
    return out


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The 2-norm over all gradients, sharded ones included (their part is summed over ranks)."""
    plain = [g for g in grads if not is_sharded(g)]
    sharded = [g for g in grads if is_sharded(g)]
    if not sharded:  # torch's own, unchanged
        return torch.nn.utils.get_total_norm(plain)
    parts = [torch.nn.utils.get_total_norm(plain)] if plain else []
    parts.append(full(torch.nn.utils.get_total_norm(sharded)))
    return torch.linalg.vector_norm(torch.stack(parts))


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` that also takes a mix of sharded and plain gradients (torch's
    own refuses to mix them in one call): one global norm, each kind scaled by the same factor. With
    plain gradients only it is torch's clip_grad_norm_ step for step."""
    params = [p for p in params if p.grad is not None]
    norm = total_norm([p.grad for p in params])
    for kind in (False, True):
        same = [p for p in params if is_sharded(p.grad) == kind]
        if same:
            torch.nn.utils.clip_grads_with_norm_(same, max_norm, norm)
    return norm


def unshard_encoders(encoders: nn.ModuleDict, names: list[str], build: Callable[[str], nn.Module],
                     keep: bool) -> None:
    """Replace each sharded encoder in ``names`` by a plain copy holding its full weights, on the
    ranks where ``keep`` (rank 0: final evaluation and export, which read whole modules). Every
    rank must call it: gathering the weights is a collective. ``build(name)`` makes a new encoder
    of the same spec (its initial weights are overwritten)."""
    for name in names:
        device = next(encoders[name].parameters()).device
        state = full_state(encoders[name], keep)
        if keep:
            info = encoders[name].info
            plain = build(name)
            plain.load_state_dict(state)
            plain.info = dataclasses.replace(plain.info, modality=info.modality)
            plain.requires_grad_(False)
            encoders[name] = plain.to(device)
        del state
