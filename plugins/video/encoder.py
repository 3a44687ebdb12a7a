"""Encoder `video-frames`: any registered image encoder applied to frames sampled uniformly from
each clip; the latent is the sequence of frame latents [B, num_frames, dim].

It keeps the frames apart (``info.sequence = num_frames``) instead of averaging them, so the
cache holds frame latents and the head decides how to pool (mean, first frame, or a temporal
transformer that sees order): changing the pooling never re-encodes a video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field

import fuse

SAMPLING = "uniform: round(i * (frames - 1) / (n - 1)), first and last frame included"


class EncoderSpec(fuse.Options):
    name: str                       # a registered encoder whose input kind is `image`
    options: dict[str, Any] = {}


def _relocate(options: Any, sub: str) -> Any:
    """Options saved by the inner encoder (``./x`` relative to its folder) made relative to ours."""
    if isinstance(options, dict):
        return {k: _relocate(v, sub) for k, v in options.items()}
    if isinstance(options, list):
        return [_relocate(v, sub) for v in options]
    if isinstance(options, str) and options.startswith("./"):
        return f"./{sub}/{options[2:]}"
    return options


class VideoFramesEncoder(fuse.Encoder):
    """A registered image encoder on uniformly sampled frames: [B, num_frames, dim] per clip."""

    SUBFOLDER = "image_encoder"

    class Options(fuse.Options):
        image_encoder: EncoderSpec    # e.g. {name: timm, options: {model: ...}}
        num_frames: int = Field(8, ge=1)

    def __init__(self, options: Options):
        super().__init__()
        self.options = options
        spec = options.image_encoder
        where = "video-frames options.image_encoder"
        self.image_encoder = fuse.create("encoder", spec.name, spec.options, where)
        inner = self.image_encoder.info
        if inner.input != "image":
            raise fuse.RecipeError(
                f"{where}: encoder '{spec.name}' consumes input kind '{inner.input}', but video-frames feeds "
                f"its image encoder frames (input kind 'image'); name an image encoder (e.g. timm, hf-vision).")
        if inner.sequence is not None:
            raise fuse.RecipeError(f"{where}: encoder '{spec.name}' returns a sequence per image; video-frames "
                                   "needs one pooled latent per frame.")
        self.info = fuse.EncoderInfo(
            modality="video", input="video", dim=inner.dim, source=inner.source, license=inner.license,
            image_size=inner.image_size, mean=inner.mean, std=inner.std, sequence=options.num_frames)

    def preprocess(self, raw: list) -> dict[str, torch.Tensor]:
        """Clips -> the image encoder's batch for all their frames, shaped [B, num_frames, ...]."""
        n = self.options.num_frames
        frames = [im for clip in raw for im in clip.sample(n)]
        batch = self.image_encoder.preprocess(frames)
        return {k: v.reshape(len(raw), n, *v.shape[1:]) for k, v in batch.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        b, n = next(iter(batch.values())).shape[:2]
        latents = self.image_encoder({k: v.flatten(0, 1) for k, v in batch.items()})
        return latents.reshape(b, n, -1)

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames as tokens (for fusion heads): [B, num_frames, dim], all valid."""
        latents = self.forward(batch)
        return latents, torch.ones(latents.shape[:2], dtype=torch.bool, device=latents.device)

    def preprocessing_signature(self) -> dict[str, Any]:
        return {"image_encoder": {"name": self.options.image_encoder.name,
                                  "preprocessing": self.image_encoder.preprocessing_signature()},
                "frames": {"num_frames": self.options.num_frames, "sampling": SAMPLING}}

    def save(self, directory: Path) -> dict[str, Any]:
        directory = Path(directory)
        inner = self.image_encoder.save(directory / self.SUBFOLDER)
        return {"image_encoder": {"name": self.options.image_encoder.name,
                                  "options": _relocate(inner, self.SUBFOLDER)},
                "num_frames": self.options.num_frames}
