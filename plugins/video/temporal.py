"""Head `temporal`: pools a sequence of frame latents [B, N, D], then applies a per-modality head.

Why an attention pooling: mean pooling is blind to order, and the first frame sees one instant,
so neither can tell a clip from its time reversal (moving left vs right, growing vs shrinking).
`attention` runs a small transformer over the frames with learned frame-position embeddings and
a CLS token; the CLS output depends on which frame came when, so it can represent motion.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

import fuse


class HeadSpec(fuse.Options):
    name: str = "residual-mlp"
    options: dict[str, Any] = {}


class TemporalHead(fuse.Head):
    """Pools frame latents (mean, first frame, or an order-aware temporal transformer), then a head."""

    takes_sequences = True

    class Options(fuse.Options):
        pooling: Literal["mean", "first", "attention"] = "attention"
        head: HeadSpec = HeadSpec()            # applied to the pooled latent, e.g. residual-mlp
        # attention only: a 1-layer transformer at `width` over at most `max_frames` frames
        width: int = Field(256, ge=8)
        layers: int = Field(1, ge=1)
        attention_heads: int = Field(4, ge=1)
        dropout: float = Field(0.1, ge=0, lt=1)
        max_frames: int = Field(64, ge=1)

    def __init__(self, options: Options, in_dim: int, out_dim: int):
        super().__init__(options, in_dim, out_dim)
        pooled_dim = in_dim
        if options.pooling == "attention":
            if options.width % options.attention_heads:
                raise fuse.RecipeError(f"temporal head: width {options.width} is not divisible by "
                                       f"attention_heads {options.attention_heads}.")
            self.norm = nn.LayerNorm(in_dim)
            self.proj = nn.Linear(in_dim, options.width)
            self.cls = nn.Parameter(torch.zeros(1, 1, options.width))
            # As large as the projected frames (not ViT's 0.02): a small head trained on a few hundred
            # clips must tell frames apart by position from the first steps, or it learns a mean.
            self.positions = nn.Parameter(torch.randn(1, options.max_frames, options.width) * 0.5)
            layer = nn.TransformerEncoderLayer(options.width, options.attention_heads, 2 * options.width,
                                               options.dropout, activation="gelu", batch_first=True,
                                               norm_first=True)
            self.temporal = nn.TransformerEncoder(layer, options.layers, enable_nested_tensor=False)
            self.out_norm = nn.LayerNorm(options.width)
            pooled_dim = options.width
        self.head = fuse.create("head", options.head.name, options.head.options, "temporal options.head",
                                in_dim=pooled_dim, out_dim=out_dim)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """[B, N, D] frame latents -> [B, pooled_dim]."""
        if x.ndim != 3:
            raise fuse.RecipeError(f"temporal head expects frame latents [B, N, D], got shape {tuple(x.shape)}; "
                                   "use it with a sequence encoder such as video-frames.")
        if self.options.pooling == "mean":
            return x.mean(dim=1)
        if self.options.pooling == "first":
            return x[:, 0]
        n = x.shape[1]
        if n > self.options.max_frames:
            raise fuse.RecipeError(f"temporal head: {n} frames but max_frames is {self.options.max_frames}; "
                                   "raise max_frames.")
        tokens = self.proj(self.norm(x)) + self.positions[:, :n]
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.out_norm(self.temporal(tokens)[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x))
