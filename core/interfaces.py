"""The three component interfaces plugins implement: Encoder, Head and Objective.

Each component class has a nested ``Options`` pydantic model (its recipe options; unknown
keys are errors; defaults live there) and is built by the registry as ``cls(options, ...)``.
Dataset builders are in ``fuse.datasets``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import pydantic
import torch
from torch import nn

INPUT_KINDS = ("image", "text", "audio")


class Options(pydantic.BaseModel):
    """Base for component options: unknown keys are errors, not silently ignored."""

    model_config = pydantic.ConfigDict(extra="forbid", protected_namespaces=())


@dataclass(frozen=True)
class EncoderInfo:
    """What an encoder is: recorded in exports, model cards and cache keys."""

    modality: str              # the recipe's modality name it serves, e.g. "image"
    input: str                 # raw input kind it preprocesses: "image" (PIL), "text" (str), "audio"
    dim: int                   # size of the pooled latent
    source: str = ""           # where the weights came from (hub id, file, package)
    license: str = ""
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    sample_rate: int | None = None


class Encoder(nn.Module, ABC):
    """A pretrained unimodal model: raw inputs -> preprocessed batch -> pooled latent [B, D].

    Subclasses set ``self.info`` in ``__init__``. ``preprocess`` runs on the CPU (in data
    loader workers), ``forward`` on the training device.
    """

    Options: ClassVar[type[pydantic.BaseModel]] = Options
    info: EncoderInfo

    @abstractmethod
    def preprocess(self, raw: list[Any]) -> dict[str, torch.Tensor]:
        """Turn a list of raw inputs (PIL images, strings, AudioClip) into model tensors."""

    @abstractmethod
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled latent [B, info.dim]."""

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token latents [B, T, D] and a bool mask [B, T] (True = valid), for fusion heads."""
        raise NotImplementedError(f"{type(self).__name__} does not expose token latents")

    @abstractmethod
    def preprocessing_signature(self) -> dict[str, Any]:
        """Everything about preprocessing that changes the latents (for cache keys)."""

    @abstractmethod
    def save(self, directory: Path) -> dict[str, Any]:
        """Write weights (safetensors) and configs into ``directory``.

        Returns the options that rebuild this encoder from that directory with no network
        access. Paths in them start with './' and are relative to ``directory``.
        """


class Head(nn.Module):
    """Maps one modality's latent [B, D_in] into the shared space [B, D_out]."""

    Options: ClassVar[type[pydantic.BaseModel]] = Options

    def __init__(self, options, in_dim: int, out_dim: int):
        super().__init__()
        self.options, self.in_dim, self.out_dim = options, in_dim, out_dim


class Fusion(nn.Module):
    """One module shared by both towers: token sequences [B, T, width] -> embeddings [B, D_out].

    With a fusion, each tower's head maps every token to ``width`` (heads act on the last
    dimension), and the fusion pools them, so both modalities share its parameters.
    """

    Options: ClassVar[type[pydantic.BaseModel]] = Options

    def __init__(self, options, modalities: tuple[str, str], width: int, out_dim: int):
        super().__init__()
        self.options, self.modalities, self.width, self.out_dim = options, modalities, width, out_dim

    def forward(self, modality: str, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@dataclass
class Step:
    """What an objective sees for one optimisation step.

    ``latents`` are encoder outputs (from the cache or computed online); ``embed`` runs the
    heads, so objectives that transform latents first (FuseMix) can call it themselves.
    ``extras`` carries optional inputs such as teacher latents.
    """

    modalities: tuple[str, str]
    latents: dict[str, torch.Tensor]
    embed: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    _embeddings: dict[str, torch.Tensor] | None = None

    @property
    def embeddings(self) -> dict[str, torch.Tensor]:
        """Head outputs for the unmodified latents, computed once per step."""
        if self._embeddings is None:
            self._embeddings = self.embed(self.latents)
        return self._embeddings


class Objective(nn.Module):
    """A loss over one step. May own parameters (a temperature), which are trained too.

    ``requires`` names the Step extras it needs (e.g. {"teacher"}); a recipe without them is
    rejected before training starts.
    """

    Options: ClassVar[type[pydantic.BaseModel]] = Options
    requires: ClassVar[frozenset[str]] = frozenset()
    pooled_latents_only: ClassVar[bool] = False  # True: cannot work on token latents (a fusion)

    def __init__(self, options, modalities: tuple[str, str], embed_dim: int,
                 extra_dims: dict[str, int] | None = None):
        super().__init__()
        self.options, self.modalities, self.embed_dim = options, modalities, embed_dim
        # Sizes of the Step extras this run provides, e.g. {"teacher": 768}.
        self.extra_dims = dict(extra_dims or {})

    def forward(self, step: Step) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """Scalars worth logging besides the loss (e.g. the temperature)."""
        return {}
