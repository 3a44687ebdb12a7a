"""Heads that map an encoder latent into the shared space: linear, FuseMix's residual MLP, and identity
(a reference model's towers already embed into its own joint space)."""

from __future__ import annotations

from torch import nn

import fuse


class LinearHead(fuse.Head):
    """A single linear map (the projector of CLIP-style models)."""

    class Options(fuse.Options):
        bias: bool = False

    def __init__(self, options: Options, in_dim: int, out_dim: int):
        super().__init__(options, in_dim, out_dim)
        self.proj = nn.Linear(in_dim, out_dim, bias=options.bias)

    def forward(self, x):
        return self.proj(x)


class ResidualBlock(nn.Module):
    """x + MLP(LN(x)): pre-norm residual block, as in FuseMix's heads."""

    def __init__(self, dim: int, expansion: float, dropout: float):
        super().__init__()
        hidden = int(dim * expansion)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x):
        return x + self.mlp(self.norm(x))


class ResidualMLPHead(fuse.Head):
    """`depth` residual MLP blocks at the latent's width, then LayerNorm and a linear map."""

    class Options(fuse.Options):
        depth: int = 2
        expansion: float = 4.0
        dropout: float = 0.0
        bias: bool = True

    def __init__(self, options: Options, in_dim: int, out_dim: int):
        super().__init__(options, in_dim, out_dim)
        self.blocks = nn.Sequential(*[ResidualBlock(in_dim, options.expansion, options.dropout)
                                      for _ in range(options.depth)])
        self.norm = nn.LayerNorm(in_dim)
        self.proj = nn.Linear(in_dim, out_dim, bias=options.bias)

    def forward(self, x):
        return self.proj(self.norm(self.blocks(x)))


class IdentityHead(fuse.Head):
    """No parameters: the latent is the embedding (a reference's tower, already in its joint space)."""

    def __init__(self, options: fuse.Options, in_dim: int, out_dim: int):
        if in_dim != out_dim:
            raise fuse.RecipeError(f"head 'identity' keeps the encoder's {in_dim}-d latents as embeddings, but "
                                   f"embed_dim is {out_dim}; set embed_dim: {in_dim} or use a head that projects.")
        super().__init__(options, in_dim, out_dim)

    def forward(self, x):
        return x


@fuse.hookimpl
def register_heads(register):
    register("linear", LinearHead)
    register("residual-mlp", ResidualMLPHead)
    register("identity", IdentityHead)
