"""One micro-batch's forward and backward: plain, or GradCache when ``train.chunk_size`` is set.

GradCache (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory
Limited Setup") keeps ``train.batch_size`` as the contrastive batch while only ``chunk_size``
rows of an online (unfrozen) encoder's activations are alive at a time. A chunked step:

1. encodes each online tower's batch chunk by chunk *without* graphs, recording the RNG state
   before every chunk;
2. computes every objective's loss on the *full* batch from those latents, made leaves that
   require grad, and backpropagates it: heads and objectives get their full-batch gradient,
   and the latents get theirs (the "gradient cache");
3. encodes again chunk by chunk *with* graphs, the chunk's RNG state replayed (dropout draws
   the masks of step 1), and backpropagates that chunk's slice of the cached gradient.

The encoders' gradient is then exactly that of step 2's loss: a sum over chunks of each chunk's
vector-Jacobian product. Objectives only ever see full-batch latents, so FuseMix mixes across
the whole batch, InfoNCE/SigLIP/distillation get every negative, and none of them knows about
chunks. Frozen towers come from the latent table and are not chunked (nothing to save there).

BatchNorm in an online encoder normalises by its chunk's statistics (as any chunked encoder
would); its running statistics are updated once per chunk, in step 1, and put back after the
replay of step 3.

Under torch.distributed the chunked path does not go through DDP, whose reducer expects one
backward per forward: all of a step's backward passes run without communication and the
gradients are averaged over ranks once, after the last micro-batch (``sync``), which is what
DDP's ``no_sync`` on every chunk but the last would give.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from fuse.base.errors import RecipeError
from fuse.base.latents import Tokens
from fuse.training import distributed


def _rows(inputs: dict[str, torch.Tensor]) -> int:
    return next(iter(inputs.values())).shape[0]


def split_inputs(inputs: dict[str, torch.Tensor], size: int, modality: str) -> list[dict[str, torch.Tensor]]:
    """A preprocessed batch as chunks of ``size`` rows; every tensor must be batch-first."""
    n = _rows(inputs)
    bad = [k for k, v in inputs.items() if v.ndim == 0 or v.shape[0] != n]
    if bad:
        raise RecipeError(f"train.chunk_size: the {modality} encoder's preprocessed batch has tensors {bad} whose "
                          f"first dimension is not the batch ({n} rows), so it cannot be split into chunks; "
                          "remove train.chunk_size for this recipe.")
    return [{k: v[i:i + size] for k, v in inputs.items()} for i in range(0, n, size)]


def _rng_state(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state, device: torch.device) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)


def _leaf(latents):
    """Latents cut from their (absent) graph, as a leaf that collects the loss's gradient."""
    if isinstance(latents, Tokens):
        return Tokens(latents.values.detach().requires_grad_(), latents.mask)
    return latents.detach().requires_grad_()


def _values(latents) -> torch.Tensor:
    return latents.values if isinstance(latents, Tokens) else latents


def _cat(parts: list):
    if isinstance(parts[0], Tokens):
        return Tokens(torch.cat([p.values for p in parts]), torch.cat([p.mask for p in parts]))
    return torch.cat(parts)


class Backward:
    """Forward and backward of one micro-batch, returning (loss, terms) with gradients accumulated.

    ``chunk_size``: rows per chunk of an online tower's forward on this process (None: plain).
    The loop calls ``backward(batch, scale, last)`` for every micro-batch of an optimiser step
    (``scale`` = 1 / grad_accum; ``last`` marks the one whose backward synchronises ranks).
    """

    def __init__(self, step_module: nn.Module, trainer: nn.Module, precision, chunk_size: int | None,
                 sharded: list[nn.Module] = ()):
        self.step_module, self.trainer, self.precision = step_module, trainer, precision
        self.chunk_size = chunk_size
        self.online = {m for p in step_module.pairs for m in p.modalities if m not in step_module.frozen}
        self.chunked = chunk_size is not None and bool(self.online)
        self.sharded = list(sharded)  # FSDP encoders (train.fsdp): they reduce-scatter their own gradients
        self.params = [p for p in step_module.parameters() if p.requires_grad]

    def __call__(self, batches: dict, scale: float, last: bool = True):
        for encoder in self.sharded:  # FSDP's no_sync: reduce-scatter only in the step's last micro-batch
            encoder.set_requires_gradient_sync(last)
        if self.chunked:
            loss, terms = self.chunked_backward(batches, scale)
        else:
            # DDP reduces gradients during backward: only the last micro-batch of a step needs to.
            sync = contextlib.nullcontext() if last or not hasattr(self.trainer, "no_sync") else self.trainer.no_sync()
            with sync:
                with self.precision.autocast():
                    loss, terms = self.trainer(batches)
                self.precision.backward(loss * scale)
        if last and (self.chunked or self.sharded):  # no DDP: the replicated parameters' gradients, averaged once
            distributed.average_grads(self.params)
        return loss, terms

    def chunked_backward(self, batches: dict, scale: float):
        """Steps 1-3 of the module docstring for one micro-batch."""
        model, step = self.step_module.model, self.step_module
        # 1. Chunks without graphs; the RNG state before each is kept for its replay.
        work, latents = [], {}
        for pair in step.pairs:
            rows, inputs, *_ = batches[pair.modalities]
            device = rows.device
            for m in pair.modalities:
                if m not in self.online:
                    continue
                on_device = {k: v.to(device, non_blocking=True) for k, v in inputs[m].items()}
                chunks, states, outs = split_inputs(on_device, self.chunk_size, m), [], []
                for chunk in chunks:
                    states.append(_rng_state(device))
                    with torch.no_grad(), self.precision.autocast():
                        outs.append(model.encode_batch(m, chunk))
                latents.setdefault(pair.modalities, {})[m] = _leaf(_cat(outs))
                work.append((pair.modalities, m, chunks, states, device))
        buffers = [(b, b.detach().clone()) for m in self.online for b in model.encoders[m].buffers()]
        # 2. The full batch's loss from the cached latents: heads, objectives and the latents' gradient.
        with self.precision.autocast():
            loss, terms = step(batches, latents=latents)
        self.precision.backward(loss * scale)
        # 3. Replay each chunk with its RNG state and push its slice of the cached gradient through.
        devices = list(dict.fromkeys(w[-1] for w in work))
        after = [_rng_state(d) for d in devices]
        for pair, m, chunks, states, device in work:
            grad, start = _values(latents[pair][m]).grad, 0
            if grad is None:  # no objective used this tower's latents
                continue
            for chunk, state in zip(chunks, states):
                _set_rng_state(state, device)
                with self.precision.autocast():
                    out = _values(model.encode_batch(m, chunk))
                n = out.shape[0]
                torch.autograd.backward(out, grad[start:start + n])
                start += n
        with torch.no_grad():  # BatchNorm statistics as step 1 left them
            for buf, saved in buffers:
                buf.copy_(saved)
        for state, device in zip(after, devices):
            _set_rng_state(state, device)
        return loss, terms
