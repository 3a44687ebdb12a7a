"""Self-supervised distillation (Cares et al., shared encoder + distillation; ref. TimCares/EV-LP).

A frozen self-supervised image model (the recipe's `teacher:`, e.g. BEiTv2 or DINO) embeds
each image. Both students, the image tower and the text tower, are pulled towards the
teacher's embedding *of the image* with a contrastive loss: a student embedding, projected
into the teacher's space by a learnable linear map, must pick its own teacher embedding out
of the current batch plus a memory bank of past teacher embeddings. The image-text term is
a separate objective in the same recipe (e.g. infonce), weighted there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import fuse
from fuse.distributed import gather_with_grad
from fuse.interfaces import Objective, Step
from fuse.plugins.memory_bank import MemoryBank


class Distillation(Objective):
    """Contrastive distillation of both towers towards a frozen teacher, with a memory bank."""

    requires = frozenset({"teacher"})

    class Options(fuse.Options):
        queue_size: int = 65536
        temperature: float = 0.07
        students: list[str] | None = None   # default: both modalities

    def __init__(self, options: Options, modalities, embed_dim, extra_dims=None):
        super().__init__(options, modalities, embed_dim, extra_dims)
        if "teacher" not in self.extra_dims:
            raise fuse.RecipeError("objectives: distillation needs a `teacher:` section in the recipe.")
        t_dim = self.extra_dims["teacher"]
        self.students = list(options.students or modalities)
        unknown = set(self.students) - set(modalities)
        if unknown:
            raise fuse.RecipeError(f"objectives: distillation students {sorted(unknown)} are not modalities "
                                   f"of the recipe ({', '.join(modalities)}).")
        self.predictors = nn.ModuleDict({m: nn.Linear(embed_dim, t_dim) for m in self.students})
        self.bank = MemoryBank(options.queue_size, t_dim)

    def forward(self, step: Step) -> torch.Tensor:
        if "teacher" not in step.extras:
            raise fuse.RecipeError("distillation: this step has no teacher latents; add a `teacher:` section.")
        teacher = F.normalize(step.extras["teacher"].float(), dim=-1)
        targets = gather_with_grad(teacher)                         # global batch (no grad needed)
        negatives = self.bank.items()
        keys = torch.cat([targets, negatives]) if negatives.numel() else targets
        labels = torch.arange(targets.shape[0], device=targets.device)
        loss = 0.0
        for m in self.students:
            s = gather_with_grad(F.normalize(self.predictors[m](step.embeddings[m]).float(), dim=-1))
            loss = loss + F.cross_entropy(s @ keys.T / self.options.temperature, labels)
        self.bank.enqueue(teacher)
        return loss / len(self.students)

    def metrics(self) -> dict[str, float]:
        return {"memory_bank_fill": float(self.bank.count)}


@fuse.hookimpl
def register_objectives(register):
    register("distillation", Distillation)
