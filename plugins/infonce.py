"""Symmetric InfoNCE (CLIP's loss) with a learnable temperature."""

from __future__ import annotations

import fuse


class InfoNCE(fuse.Objective):
    """Cross-entropy over the batch similarity matrix, both directions averaged."""

    class Options(fuse.Options):
        init_temperature: float = 0.07
        learnable: bool = True
        min_temperature: float = 0.01   # i.e. logit scale at most 100, as CLIP clamps it
        # Under torch.distributed: each rank's rows against all columns ([b, B] logits, not [B, B]);
        # the same gradient, less memory per rank (open_clip's local_loss). No effect on one process.
        local_loss: bool = False

    def __init__(self, options: Options, modalities, embed_dim, extra_dims=None):
        super().__init__(options, modalities, embed_dim, extra_dims)
        self.scale = fuse.LogitScale(options.init_temperature, options.min_temperature, learnable=options.learnable)

    def forward(self, step: fuse.Step, draws: dict):
        a, b = self.modalities
        emb = step.embeddings
        return fuse.info_nce(emb[a], emb[b], self.scale(), local=self.options.local_loss)

    def metrics(self) -> dict[str, float]:
        return {"temperature": self.scale.temperature}


@fuse.hookimpl
def register_objectives(register):
    register("infonce", InfoNCE)
