"""The component interfaces plugins implement: Encoder, Head, Fusion and Objective.

Each component class has a nested ``Options`` pydantic model (its recipe options; unknown
keys are errors; defaults live there) and is built by the registry as ``cls(options, ...)``.
Dataset builders are in ``fuse.data.datasets``, input kinds in ``fuse.base.inputs``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import pydantic
import torch
from torch import nn

from fuse.base.inputs import input_kind
from fuse.base.options import Options


@dataclass(frozen=True)
class EncoderInfo:
    """What an encoder is: recorded in exports, model cards and cache keys."""

    modality: str              # the tower it serves; the model sets it to the recipe's name (an encoder may give its input kind)
    input: str                 # the input kind it reads: one it registered with (register(..., modalities=)), checked when built
    dim: int                   # size of one latent vector
    source: str = ""           # where the weights came from (hub id, file, package)
    license: str = ""
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    sample_rate: int | None = None
    # None: one pooled latent [B, dim] per item. N: a fixed-length sequence [B, N, dim] (e.g. one
    # latent per video frame), which needs a head that pools sequences (Head.takes_sequences).
    sequence: int | None = None


class Encoder(nn.Module, ABC):
    """A pretrained unimodal model: raw inputs -> preprocessed batch -> pooled latent [B, D].

    Subclasses set ``self.info`` in ``__init__``. ``preprocess`` runs on the CPU (in data
    loader workers), ``forward`` on the training device.
    """

    Options: ClassVar[type[pydantic.BaseModel]] = Options
    info: EncoderInfo

    def preprocess(self, raw: list[Any]) -> dict[str, torch.Tensor]:
        """Turn a list of raw inputs (what the input kind's reader returns) into model tensors.

        By default the input kind batches them (``InputKind.collate``)."""
        return input_kind(self.info.input).collate(raw)

    @abstractmethod
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled latent [B, info.dim]."""

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token latents [B, T, D] and a bool mask [B, T] (True = valid), for fusion heads."""
        raise NotImplementedError(f"{type(self).__name__} does not expose token latents")

    @abstractmethod
    def preprocessing_signature(self) -> dict[str, Any]:
        """Everything about preprocessing that changes the latents (for cache keys)."""

    def sentence_transformers_config(self) -> dict[str, Any] | None:
        """For a transformers text encoder that sentence-transformers can rebuild from what ``save`` writes:
        {"pooling": "mean" | "cls", "max_length": int}, so a one-tower export also loads there. None otherwise."""
        return None

    @abstractmethod
    def save(self, directory: Path) -> dict[str, Any]:
        """Write weights (safetensors) and configs into ``directory``.

        Returns the options that rebuild this encoder from that directory with no network
        access. Paths in them start with './' and are relative to ``directory``.
        """


class Head(nn.Module):
    """Maps one modality's latent [B, D_in] into the shared space [B, D_out].

    Heads with ``takes_sequences = True`` also take a fixed-length sequence [B, N, D_in] (an
    encoder whose ``info.sequence`` is N) and pool it; the others get pooled latents only.
    """

    Options: ClassVar[type[pydantic.BaseModel]] = Options
    takes_sequences: ClassVar[bool] = False

    def __init__(self, options, in_dim: int, out_dim: int):
        super().__init__()
        self.options, self.in_dim, self.out_dim = options, in_dim, out_dim


class Fusion(nn.Module):
    """One module shared by every tower: token sequences [B, T, width] -> embeddings [B, D_out].

    With a fusion, each tower's head maps every token to ``self.width`` (heads act on the last
    dimension; a subclass sets it in ``__init__``, from whatever options it has), and the fusion
    pools them, so all modalities share its parameters.
    """

    Options: ClassVar[type[pydantic.BaseModel]] = Options
    width: int

    def __init__(self, options, modalities: tuple[str, ...], out_dim: int):
        super().__init__()
        self.options, self.modalities, self.out_dim = options, tuple(modalities), out_dim

    def forward(self, modality: str, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """One modality's tokens [B, T, width] (mask: True = valid) -> embeddings [B, out_dim]."""
        raise NotImplementedError


@dataclass
class Step:
    """What an objective sees of one batch of its pair of modalities.

    ``latents`` are encoder outputs (from the cache or computed online); ``embed`` runs the
    heads, so objectives that transform latents first (FuseMix) can call it themselves.
    ``extras`` carries the extra inputs the objective ``requires`` (e.g. teacher latents).
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
    """A loss over one pair of modalities. May own parameters (a temperature), which are trained too.

    A step calls ``draws = draw(step)`` (everything random: FuseMix's lambda and partners), then
    ``forward(step, draws)`` (the loss: the same step and draws give the same loss, so it can be
    recomputed, e.g. chunk by chunk), then ``commit(step, draws)`` once the step's loss is final
    (side effects, e.g. a memory bank's enqueue). ``requires`` names the Step extras it needs
    (e.g. {"teacher"}); a recipe without them is rejected before training starts.
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

    def draw(self, step: Step) -> dict[str, Any]:
        """This step's random choices; none by default."""
        return {}

    def forward(self, step: Step, draws: dict[str, Any]) -> torch.Tensor:  # pragma: no cover - interface
        """The loss of ``step`` given this step's ``draws``: a scalar tensor."""
        raise NotImplementedError

    def commit(self, step: Step, draws: dict[str, Any]) -> None:
        """Side effects of a finished step (state updates); none by default."""

    def step_loss(self, step: Step) -> torch.Tensor:
        """draw, forward and commit in one call: one step's loss outside the training loop (tests, notebooks)."""
        draws = self.draw(step)
        loss = self(step, draws)
        self.commit(step, draws)
        return loss

    def metrics(self) -> dict[str, float]:
        """Scalars worth logging besides the loss (e.g. the temperature)."""
        return {}
