"""Encoder `sensor-conv`: a small 1-D conv net over sensor signals, trained along with the heads.

There are no pretrained weights for a new sensor, so this encoder starts from a seeded random
init and a recipe trains it (``frozen: false``). It has no ``preprocess``: the `sensor` input
kind's ``collate`` batches the signals, and ``forward`` pools over each signal's valid steps
only, so padding a signal in a batch never changes its latent.
"""

from __future__ import annotations

from pathlib import Path

import torch
from pydantic import Field, field_validator
from torch import nn

import fuse

from .inputs import SensorInput


class SensorConv(fuse.Encoder):
    """1-D conv net over sensor signals, masked mean pooling (trained from a seeded init)."""

    class Options(fuse.Options):
        channels: int = Field(4, gt=0)    # channels of every signal it reads
        width: int = Field(64, gt=0)      # conv channels
        layers: int = Field(4, gt=0)      # conv blocks; each halves the time axis
        kernel: int = Field(5, gt=0)      # odd: a step's window is centred on it
        dim: int = Field(128, gt=0)       # latent size
        seed: int = 0                     # the random init
        checkpoint: str | None = None     # weights written by save(); './x' is relative to its folder

        @field_validator("kernel")
        @classmethod
        def _odd(cls, k):
            if k % 2 == 0:
                raise ValueError(f"must be odd (a window centred on each step), got {k}")
            return k

    def __init__(self, options: Options):
        super().__init__()
        self.options = options
        # Seeded from the options, and without touching the global RNG: the same options give
        # the same init wherever the encoder is built (training, `fuse export`, a test).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(options.seed)
            # Input: the signal's channels plus its relative position in time (0 at the start,
            # 1 at the end), so pooled features can tell a rising envelope from a falling one.
            sizes = [options.channels + 1] + [options.width] * options.layers
            self.convs = nn.ModuleList(
                nn.Conv1d(c_in, c_out, options.kernel, stride=2, padding=options.kernel // 2)
                for c_in, c_out in zip(sizes, sizes[1:]))
            # LayerNorm over channels at each step: no statistics across time, so it is blind to padding.
            self.norms = nn.ModuleList(nn.LayerNorm(options.width) for _ in range(options.layers))
            self.proj = nn.Linear(options.width, options.dim)
        source = "random init (seed %d)" % options.seed
        if options.checkpoint:
            path = fuse.resolve_path(options.checkpoint)
            try:
                self.load_state_dict(fuse.load_state_dict(path))
            except RuntimeError as exc:  # shapes or names differ: other channels/width/layers
                raise fuse.ModelFileError(f"{path} does not fit sensor-conv with options "
                                          f"{options.model_dump(exclude={'checkpoint'})}: {exc}") from None
            source = str(path)
        self.info = fuse.EncoderInfo(modality="sensor", input="sensor", dim=options.dim, source=source,
                                     license="weights trained by you")

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        signal, lengths = batch["signal"], batch["length"]
        if signal.shape[1] != self.options.channels:
            raise fuse.DataError(f"sensor-conv was built for {self.options.channels}-channel signals; got "
                                 f"{signal.shape[1]} channels (set the encoder's channels option).")
        steps = torch.arange(signal.shape[-1], device=signal.device, dtype=signal.dtype)
        position = steps[None, :] / (lengths[:, None] - 1).clamp(min=1).to(signal.dtype)
        mask = fuse.length_mask(lengths, signal.shape[-1])
        x = torch.cat([signal, position[:, None, :]], dim=1) * mask[:, None, :]
        for conv, norm in zip(self.convs, self.norms):
            x = nn.functional.gelu(norm(conv(x).transpose(1, 2)).transpose(1, 2))
            lengths = (lengths + 1) // 2             # valid steps left after a stride-2 conv
            mask = fuse.length_mask(lengths, x.shape[-1])
            # Zero the padding again (the conv's bias filled it), so the next conv sees zeros
            # past the end of a signal exactly as it would without padding: a padded signal
            # gets the latent it gets alone.
            x = x * mask[:, None, :]
        return self.proj(x.transpose(1, 2)), mask

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens, mask = self.forward_tokens(batch)
        return fuse.masked_mean(tokens, mask)

    def preprocessing_signature(self) -> dict:
        # The `sensor` kind's collate is this encoder's preprocessing.
        return {"input": "sensor", "max_length": SensorInput.max_length}

    def save(self, directory: Path) -> dict:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        fuse.save_state_dict(self, directory / "model.safetensors")
        return {**self.options.model_dump(), "checkpoint": "./model.safetensors"}
