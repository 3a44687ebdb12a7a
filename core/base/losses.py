"""Loss building blocks shared by objective plugins: a learnable temperature and InfoNCE.

The temperature is stored as a *log* scale (as in CLIP/open_clip), exponentiated in forward
and clamped so the logits cannot blow up; its scalar parameter has ndim 0, so the optimiser
helper keeps it out of weight decay.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fuse.base import collectives
from fuse.base.collectives import gather_with_grad


class LogitScale(nn.Module):
    """Learnable ``1/temperature`` stored as its log, clamped to [1/max_temp, 1/min_temp]."""

    def __init__(self, init_temperature: float = 0.07, min_temperature: float = 0.01,
                 max_temperature: float = 100.0, learnable: bool = True):
        super().__init__()
        value = torch.tensor(math.log(1.0 / init_temperature))
        self.log_scale = nn.Parameter(value, requires_grad=learnable)
        self.low, self.high = math.log(1.0 / max_temperature), math.log(1.0 / min_temperature)

    def forward(self) -> torch.Tensor:
        # Clamp the stored value in place so it never drifts outside the range, and keep the
        # gradient path of the (clamped) parameter.
        """exp(log scale), after clamping the stored value into the allowed range."""
        with torch.no_grad():
            self.log_scale.clamp_(self.low, self.high)
        return self.log_scale.exp()

    @property
    def temperature(self) -> float:
        """The current temperature (1 / scale) as a float, for logging."""
        return float(1.0 / self.log_scale.detach().clamp(self.low, self.high).exp())


def info_nce(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, gather: bool = True,
             local: bool = False) -> torch.Tensor:
    """Symmetric InfoNCE over L2-normalised rows of ``a`` and ``b`` (pairs share a row index).

    Under torch.distributed every rank computes the loss of the global batch from gathered
    embeddings (see ``gather_with_grad``), so training matches one process on that batch.
    ``local`` (open_clip's ``local_loss``): each rank computes only its own rows against every
    rank's columns, [b, B] logits instead of [B, B]; its loss is its share of the global one,
    and the gradient after DDP's average is the same (``collectives.gather_all``).
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    if local and gather and collectives.is_distributed():
        all_a, all_b = collectives.gather_all(a), collectives.gather_all(b)
        labels = torch.arange(a.shape[0], device=a.device) + collectives.rank() * a.shape[0]
        return 0.5 * (F.cross_entropy(logit_scale * a @ all_b.T, labels)
                      + F.cross_entropy(logit_scale * b @ all_a.T, labels))
    if gather:
        a, b = gather_with_grad(a), gather_with_grad(b)
    labels = torch.arange(a.shape[0], device=a.device)
    logits = logit_scale * a @ b.T
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
