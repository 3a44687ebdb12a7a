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
import torch.distributed as dist
from pydantic import Field, model_validator
from torch import nn

import fuse


class RawTemperature(nn.Module):
    """The reference's temperature: the raw value is the parameter, clamped to [low, high].

    Logits are divided by it, so a step of the optimiser moves the temperature itself by
    about the learning rate (a log parametrisation moves it by a factor instead).
    """

    def __init__(self, init: float, low: float, high: float, learnable: bool = True):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(init)), requires_grad=learnable)
        self.low, self.high = low, high

    def forward(self) -> torch.Tensor:
        with torch.no_grad():  # clamp before use, as the reference does every forward
            self.value.clamp_(self.low, self.high)
        return 1.0 / self.value  # the logit scale

    @property
    def temperature(self) -> float:
        return float(self.value.detach().clamp(self.low, self.high))


class FuseMix(fuse.Objective):
    """Symmetric InfoNCE on latent-mixed pairs; one lambda and one pairing per step."""

    pooled_latents_only = True  # mixing is defined on pooled latent vectors

    class Options(fuse.Options):
        alpha: float = Field(1.0, gt=0)         # lambda ~ Beta(alpha, alpha); the paper uses 1
        # "halves": the reference code (first half of the batch mixed with the second, B/2 pairs);
        # "permutation": the paper's text (each pair mixed with a random partner, B pairs).
        pairing: Literal["halves", "permutation"] = "halves"
        # Reference: a raw temperature 0.07, learnable, clamped to [0.001, 0.5]. "log" stores
        # log(1/temperature) as infonce does.
        temperature_param: Literal["raw", "log"] = "raw"
        init_temperature: float = Field(0.07, gt=0)
        min_temperature: float = Field(0.001, gt=0)
        max_temperature: float = Field(0.5, gt=0)
        learnable: bool = True
        fixed_lambda: float | None = Field(None, ge=0, le=1)  # e.g. 1.0 turns mixing off (tests, ablations)
        local_loss: bool = False  # as infonce's: [b, B] logits per rank under torch.distributed

        @model_validator(mode="after")
        def _init_within_clamp(self):
            if not self.min_temperature <= self.init_temperature <= self.max_temperature:
                raise ValueError(f"init_temperature {self.init_temperature} must lie within "
                                 f"[min_temperature, max_temperature] = [{self.min_temperature}, "
                                 f"{self.max_temperature}]")
            return self

    def __init__(self, options: Options, modalities, embed_dim, extra_dims=None):
        super().__init__(options, modalities, embed_dim, extra_dims)
        o = options
        if o.temperature_param == "raw":
            self.scale = RawTemperature(o.init_temperature, o.min_temperature, o.max_temperature, o.learnable)
        else:
            self.scale = fuse.LogitScale(o.init_temperature, o.min_temperature, o.max_temperature, o.learnable)
        self.last_lambda = float("nan")

    def draw_lambda(self, device="cpu") -> torch.Tensor:
        """One lambda for the step, from torch's RNG (so torch.manual_seed reproduces it).

        Drawn on the CPU whatever the device, so a seed gives the same lambda on CPU and GPU;
        under torch.distributed rank 0's draw is broadcast: one lambda per global batch.
        """
        if self.options.fixed_lambda is not None:
            lam = torch.tensor(float(self.options.fixed_lambda))
        else:
            alpha = torch.tensor(float(self.options.alpha))
            lam = torch.distributions.Beta(alpha, alpha).sample()
        lam = lam.to(device)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(lam, src=0)
        return lam

    def draw(self, step: fuse.Step) -> dict:
        """This step's lambda and partners: drawn once, so the loss can be recomputed identically."""
        a = self.modalities[0]
        n = step.latents[a].shape[0]
        lam = self.draw_lambda(step.latents[a].device)
        self.last_lambda = lam.detach()  # converted to float only when logged (no GPU sync per step)
        if self.options.pairing == "halves":
            if n < 2:
                raise fuse.RecipeError(
                    f"objectives: fusemix pairing 'halves' needs at least 2 pairs per batch and process, got "
                    f"{n}; set train.drop_last: true, raise train.batch_size, or use pairing: permutation.")
            return {"lambda": lam}
        return {"lambda": lam, "partners": torch.randperm(n)}  # CPU generator, as for lambda

    def mix(self, latents: dict[str, torch.Tensor], draws: dict) -> dict[str, torch.Tensor]:
        """Mix every modality with the same lambda and the same partners."""
        lam = draws["lambda"]
        if "partners" not in draws:
            n = next(iter(latents.values())).shape[0]
            half = n // 2  # an odd batch leaves its last pair out (the reference asserts an even batch)
            return {m: lam * x[:half] + (1 - lam) * x[half:2 * half] for m, x in latents.items()}
        return {m: lam * x + (1 - lam) * x[draws["partners"].to(x.device)] for m, x in latents.items()}

    def forward(self, step: fuse.Step, draws: dict) -> torch.Tensor:
        a, b = self.modalities
        emb = step.embed(self.mix({a: step.latents[a], b: step.latents[b]}, draws))
        return fuse.info_nce(emb[a], emb[b], self.scale(), local=self.options.local_loss)

    def metrics(self) -> dict[str, float]:
        return {"temperature": self.scale.temperature, "fusemix_lambda": float(self.last_lambda)}


@fuse.hookimpl
def register_objectives(register):
    register("fusemix", FuseMix)
