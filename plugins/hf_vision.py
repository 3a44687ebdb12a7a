"""Vision encoders from transformers (ViT, DINOv2, CLIP vision, SigLIP vision, BEiT, Data2Vec).

Preprocessing is the checkpoint's own AutoImageProcessor. Pooling: `cls` (the first token
of the last hidden state, as FuseMix and freeze-align use for DINOv2), `pooler` (the model's
pooler output) or `mean` over patch tokens. `projection: true` (CLIP, SigLIP) is the checkpoint's
own image embedding instead: its pooling and its projection into its image-text space
(``fuse.load_hf_tower``), so the tower gives the reference's own numbers. Loading, options and
save() are ``fuse.HFEncoder``'s.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

import fuse


class HFVisionEncoder(fuse.HFEncoder):
    """A transformers image encoder (AutoModel + AutoImageProcessor)."""

    modality = "image"

    class Options(fuse.HFEncoder.Options):
        pooling: Literal["cls", "pooler", "mean"] = "cls"   # projection: the reference's own

    def __init__(self, options: Options):
        super().__init__()
        from transformers import AutoImageProcessor

        self.preprocessor = self.processor = fuse.load_hf(AutoImageProcessor, fuse.hf_source(options.model),
                                                          options.revision)
        full = self.load(options)
        if options.projection:
            self.model, dim, size = full, full.dim(), full.config.vision_config.image_size
        else:  # dual-encoder checkpoints (CLIP, SigLIP): keep only the vision tower
            self.model = getattr(full, "vision_model", full)
            self.adapt(full, self.model)
            cfg = getattr(self.model, "config", full.config)
            dim, size = cfg.hidden_size, getattr(cfg, "image_size", None)
        self.info = fuse.EncoderInfo(modality="image", input="image", dim=dim, source=options.model,
                                     image_size=size if isinstance(size, int) else None,
                                     mean=tuple(getattr(self.processor, "image_mean", ()) or ()) or None,
                                     std=tuple(getattr(self.processor, "image_std", ()) or ()) or None)

    def preprocess(self, raw: list) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.processor(images=list(raw), return_tensors="pt")["pixel_values"]}

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        self.refuse_tokens()
        tokens = self.model(pixel_values=batch["pixel_values"]).last_hidden_state
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(pixel_values=batch["pixel_values"])
        if self.options.projection:
            return out
        if self.options.pooling == "pooler":
            if getattr(out, "pooler_output", None) is None:
                raise fuse.RecipeError(f"{self.options.model} has no pooler output; use pooling: cls or mean.")
            return out.pooler_output
        tokens = out.last_hidden_state
        return tokens[:, 0] if self.options.pooling == "cls" else tokens[:, 1:].mean(1)

    def preprocessing_signature(self) -> dict[str, Any]:
        return self.signature({"processor": self.processor.to_dict(), "pooling": self.options.pooling})


@fuse.hookimpl
def register_encoders(register):
    register("hf-vision", HFVisionEncoder, modalities=("image",))
