"""FuseMix (Vouitsis et al., CVPR 2024): InfoNCE on pairs mixed in latent space.

Each step draws one lambda ~ Beta(alpha, alpha) and one pairing of samples, shared by both
modalities; the *encoder latents* of each modality are mixed with that lambda and partner,
and only then go through the heads. Mixing image i with image j and caption i with caption j
by the same amount gives a new, still-aligned pair, so the heads see fresh positives every
step from cached latents. Reference: layer6ai-labs/fusemix, MLPContrastiveFusion.forward.
"""

from __future__ import annotations

from typing import Literal

import torch

import fuse
from fuse.interfaces import Objective, Step
from fuse.losses import LogitScale, info_nce


class FuseMix(Objective):
    """Symmetric InfoNCE on latent-mixed pairs; one lambda and one pairing per step."""

    pooled_latents_only = True  # mixing is defined on pooled latent vectors

    class Options(fuse.Options):
        alpha: float = 1.0                       # Beta(alpha, alpha); the paper's default is 1
        pairing: Literal["halves", "permutation"] = "halves"
        init_temperature: float = 0.07
        learnable: bool = True
        min_temperature: float = 0.01
        fixed_lambda: float | None = None        # e.g. 1.0 turns mixing off (tests, ablations)

    def __init__(self, options: Options, modalities, embed_dim, extra_dims=None):
        super().__init__(options, modalities, embed_dim, extra_dims)
        if options.alpha <= 0:
            raise fuse.RecipeError(f"objectives: fusemix alpha must be > 0, got {options.alpha}.")
        self.scale = LogitScale(options.init_temperature, options.min_temperature, learnable=options.learnable)
        self.last_lambda = float("nan")

    def draw_lambda(self, device) -> torch.Tensor:
        if self.options.fixed_lambda is not None:
            return torch.tensor(self.options.fixed_lambda, device=device)
        alpha = torch.tensor(self.options.alpha)
        return torch.distributions.Beta(alpha, alpha).sample().to(device)  # torch RNG: seeded, same on all ranks

    def mix(self, latents: dict[str, torch.Tensor], lam: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mix every modality with the same lambda and the same partners."""
        if self.options.pairing == "halves":
            # The reference: the first half of the batch mixed with the second (batch halves).
            half = next(iter(latents.values())).shape[0] // 2
            return {m: lam * x[:half] + (1 - lam) * x[half:2 * half] for m, x in latents.items()}
        n = next(iter(latents.values())).shape[0]
        perm = torch.randperm(n, device=next(iter(latents.values())).device)
        return {m: lam * x + (1 - lam) * x[perm] for m, x in latents.items()}

    def forward(self, step: Step) -> torch.Tensor:
        a, b = self.modalities
        lam = self.draw_lambda(step.latents[a].device)
        self.last_lambda = float(lam)
        emb = step.embed(self.mix({a: step.latents[a], b: step.latents[b]}, lam))
        return info_nce(emb[a], emb[b], self.scale())

    def metrics(self) -> dict[str, float]:
        return {"temperature": self.scale.temperature, "fusemix_lambda": self.last_lambda}


@fuse.hookimpl
def register_objectives(register):
    register("fusemix", FuseMix)
