"""SigLIP (Zhai et al., ICCV 2023): a pairwise sigmoid loss instead of a softmax over the batch.

Every (x_i, y_j) pair is an independent binary problem, positive on the diagonal and
negative elsewhere, so no row or column normalisation couples the batch. The logits are
``t * x_i . y_j + b`` with a learnable scale t = exp(t') and bias b; the paper starts at
t' = log 10 and b = -10 because almost every pair is a negative, and averages the summed
pair losses over the batch size.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

import fuse


def sigmoid_loss(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                 local: bool = False) -> torch.Tensor:
    """-(1/|B|) sum_ij log sigmoid(z_ij (t a_i.b_j + bias)); z = +1 on the diagonal, -1 elsewhere.

    Under torch.distributed both sides are gathered, so every rank computes the loss of the
    global batch: each rank's rows meet all other ranks' rows as negatives, exactly as on one
    process (see ``fuse.gather_with_grad`` for the gradient convention). ``local``: each rank
    takes only its own rows of ``a`` against every rank's ``b`` ([b, B] logits) and computes its
    share of the loss; ``fuse.gather_all`` returns the columns' gradients to their ranks, so the
    gradient averaged over ranks is the same.
    """
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    if local and dist.is_available() and dist.is_initialized():
        b_all = fuse.gather_all(b)
        logits = scale * a @ b_all.T + bias
        positives = torch.arange(a.shape[0], device=a.device) + dist.get_rank() * a.shape[0]
        signs = -torch.ones_like(logits)
        signs[torch.arange(a.shape[0], device=a.device), positives] = 1
        return -F.logsigmoid(signs * logits).sum() / a.shape[0]
    a, b = fuse.gather_with_grad(a), fuse.gather_with_grad(b)
    logits = scale * a @ b.T + bias
    signs = 2 * torch.eye(a.shape[0], device=a.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / a.shape[0]


class SigLIP(fuse.Objective):
    """Pairwise sigmoid loss with a learnable temperature and bias."""

    class Options(fuse.Options):
        init_temperature: float = Field(0.1, gt=0)   # logit scale t = 1/0.1 = 10, i.e. t' = log 10
        init_bias: float = -10.0
        learnable: bool = True                      # train t and b (the paper does)
        min_temperature: float = Field(0.01, gt=0)  # caps t at 100, as open_clip clamps SigLIP's scale
        local_loss: bool = False                    # under torchrun: [b, B] logits per rank, same gradient

        @model_validator(mode="after")
        def _init_within_clamp(self):
            if self.init_temperature < self.min_temperature:
                raise ValueError(f"init_temperature {self.init_temperature} is below min_temperature "
                                 f"{self.min_temperature}; raise it or lower min_temperature")
            return self

    def __init__(self, options: Options, modalities, embed_dim, extra_dims=None):
        super().__init__(options, modalities, embed_dim, extra_dims)
        self.scale = fuse.LogitScale(options.init_temperature, options.min_temperature, learnable=options.learnable)
        self.bias = nn.Parameter(torch.tensor(float(options.init_bias)), requires_grad=options.learnable)

    def forward(self, step: fuse.Step, draws: dict) -> torch.Tensor:
        a, b = self.modalities
        emb = step.embeddings
        return sigmoid_loss(emb[a], emb[b], self.scale(), self.bias, self.options.local_loss)

    def metrics(self) -> dict[str, float]:
        # Prefixed so that they do not overwrite infonce's "temperature" when both are used.
        return {"siglip_temperature": self.scale.temperature, "siglip_bias": float(self.bias.detach())}


@fuse.hookimpl
def register_objectives(register):
    register("siglip", SigLIP)
