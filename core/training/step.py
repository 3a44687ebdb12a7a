"""One training step's loss over every trained pair, as one module DDP can wrap whole."""

from __future__ import annotations

import torch
from torch import nn

from fuse.base.interfaces import Step
from fuse.recipes.plan import ObjectivePlan, PairPlan


def as_input(latents, device: torch.device):
    """Gathered latents as heads take them: on the device, fp16-stored pooled rows as float32
    (a no-op for float32 tables, so resident fp32 training is unchanged); Tokens stay fp16."""
    latents = latents.to(device, non_blocking=True) if isinstance(latents, torch.Tensor) else latents.to(device)
    if isinstance(latents, torch.Tensor) and latents.dtype == torch.float16:
        latents = latents.float()
    return latents


class StepModule(nn.Module):
    """Everything trainable; forward = the step's weighted loss summed over pairs and objectives.

    Frozen towers' latents (and extras such as a teacher's) are tables on the device, indexed by
    the batch's rows, or rows the batch stream gathered from the mapped latent store; online
    towers encode the batch's preprocessed inputs. Each objective's random draws are taken before
    its loss, and its side effects (``commit``) wait until the optimiser has stepped, so the loss
    itself could be recomputed on the same batch.
    """

    def __init__(self, model: nn.Module, objectives: nn.ModuleDict, plans: list[ObjectivePlan],
                 pairs: list[PairPlan], frozen: set[str], extra_modalities: dict[str, str]):
        super().__init__()
        self.model, self.objectives = model, objectives
        self.plans, self.pairs, self.frozen, self.extra_modalities = plans, pairs, frozen, extra_modalities
        self.latents: dict[str, torch.Tensor] = {}   # frozen towers' latents, by modality (train split)
        self.extras: dict[str, torch.Tensor] = {}    # extras' latents, by name (train split)
        self.pending: list = []

    def pair_step(self, pair: tuple[str, str], rows: torch.Tensor, online: dict, gathered: dict | None = None,
                  given: dict | None = None) -> Step:
        """The Step objectives see for one pair's batch (rows index the value tables). Tables that
        stay in the mapped store arrive already gathered (``gathered[("latents"|"extras", name)]``);
        ``given`` holds online towers' latents computed already (GradCache, ``fuse.training.gradcache``)."""
        gathered = gathered or {}
        latents = {}
        for col, m in enumerate(pair):
            if ("latents", m) in gathered:
                latents[m] = as_input(gathered["latents", m], rows.device)
            elif m in self.frozen:
                latents[m] = as_input(self.latents[m][rows[:, col]], rows.device)
            elif given and m in given:
                latents[m] = given[m]
            else:
                batch = {k: v.to(rows.device, non_blocking=True) for k, v in online[m].items()}
                latents[m] = self.model.encode_batch(m, batch)
        extras = {name: as_input(gathered["extras", name] if ("extras", name) in gathered
                                 else self.extras[name][rows[:, pair.index(m)]], rows.device)
                  for name, m in self.extra_modalities.items() if m in pair}
        return Step(modalities=pair, latents=latents, extras=extras,
                    embed=lambda lat: {m: self.model.forward_head(m, x) for m, x in lat.items()})

    def forward(self, batches: dict[tuple[str, str], tuple[torch.Tensor, dict, dict]], latents: dict | None = None):
        """The step's weighted loss over every trained pair, and each objective's term for logging.
        ``latents``: {pair: {modality: latents}} of online towers encoded already."""
        loss, terms, self.pending = 0.0, {}, []
        for pair in self.pairs:
            step = self.pair_step(pair.modalities, *batches[pair.modalities], given=(latents or {}).get(pair.modalities))
            for plan in self.plans:
                if set(plan.pair) != set(pair.modalities):
                    continue
                objective = self.objectives[plan.key]
                draws = objective.draw(step)
                terms[plan.key] = objective(step, draws)
                self.pending.append((objective, step, draws))
                loss = loss + pair.weight * plan.weight * terms[plan.key]
        return loss, terms

    def commit(self) -> None:
        """Objectives' side effects for the step just taken (e.g. a memory bank's enqueue)."""
        for objective, step, draws in self.pending:
            objective.commit(step, draws)
        self.pending = []
