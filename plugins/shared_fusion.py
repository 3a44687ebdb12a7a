"""A shared transformer over both towers' tokens (Cares et al.: shared encoder + distillation).

Each tower's encoder (optionally only its first k layers: encoder option `num_layers`) gives
token latents; its head maps every token to `width`; then one or more randomly initialised
transformer blocks, *shared by both modalities*, read a learned CLS token plus a modality
embedding, and the CLS output (normalised, projected) is the embedding.
"""

from __future__ import annotations

import torch
from torch import nn

import fuse


class SharedTransformer(fuse.Fusion):
    """Pre-norm transformer blocks shared by every modality; the CLS token is the embedding."""

    class Options(fuse.Options):
        width: int = 768
        depth: int = 1
        heads: int = 12
        mlp_ratio: float = 4.0
        dropout: float = 0.0

    def __init__(self, options: Options, modalities, out_dim: int):
        super().__init__(options, modalities, out_dim)
        self.width = width = options.width  # every tower's head maps its tokens to this width
        if width % options.heads:
            raise fuse.RecipeError(f"fusion.options: width {width} is not divisible by heads {options.heads}.")
        self.cls = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        self.modality_embedding = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(width) * 0.02) for m in modalities})
        layer = nn.TransformerEncoderLayer(width, options.heads, int(width * options.mlp_ratio), options.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, options.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim, bias=False)

    def forward(self, modality: str, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b = tokens.shape[0]
        x = torch.cat([self.cls.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        x = x + self.modality_embedding[modality].to(tokens.dtype)
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=mask.device), mask.bool()], dim=1)
        x = self.blocks(x, src_key_padding_mask=~valid)
        return self.proj(self.norm(x[:, 0]))


@fuse.hookimpl
def register_fusions(register):
    register("shared-transformer", SharedTransformer)
