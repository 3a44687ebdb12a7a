"""SigLIP (Zhai et al., 2023): a pairwise sigmoid loss instead of a softmax over the batch.

Every (x_i, y_j) pair is an independent binary problem: positive on the diagonal, negative
elsewhere, with a learnable temperature t = exp(t') and bias b (paper init t' = log 10,
b = -10, because almost all pairs are negatives).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import fuse
from fuse.distributed import gather_with_grad
from fuse.interfaces import Objective, Step


def sigmoid_loss(a: torch.Tensor, b: torch.Tensor, log_t: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """-1/|B| sum_ij log sigmoid(z_ij (t a_i.b_j + bias)), z = +1 on the diagonal, -1 elsewhere."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    a, b = gather_with_grad(a), gather_with_grad(b)  # global batch on every rank
    logits = log_t.exp() * a @ b.T + bias
    signs = 2 * torch.eye(a.shape[0], device=a.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / a.shape[0]


class SigLIP(Objective):
    """Pairwise sigmoid loss with learnable temperature and bias."""

    class Options(fuse.Options):
        init_log_temperature: float = math.log(10.0)   # t' ; the logit scale is exp(t')
        init_bias: float = -10.0
        max_log_temperature: float = math.log(100.0)

    def __init__(self, options: Options, modalities, embed_dim, extra_dims=None):
        super().__init__(options, modalities, embed_dim, extra_dims)
        self.log_t = nn.Parameter(torch.tensor(options.init_log_temperature))
        self.bias = nn.Parameter(torch.tensor(options.init_bias))

    def forward(self, step: Step) -> torch.Tensor:
        with torch.no_grad():
            self.log_t.clamp_(max=self.options.max_log_temperature)
        a, b = self.modalities
        emb = step.embeddings
        return sigmoid_loss(emb[a], emb[b], self.log_t, self.bias)

    def metrics(self) -> dict[str, float]:
        return {"siglip_scale": float(self.log_t.detach().exp()), "siglip_bias": float(self.bias.detach())}


@fuse.hookimpl
def register_objectives(register):
    register("siglip", SigLIP)
