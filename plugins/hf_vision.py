"""Vision encoders from transformers (ViT, DINOv2, CLIP vision, SigLIP vision, BEiT, Data2Vec).

Preprocessing is the checkpoint's own AutoImageProcessor. Pooling: `cls` (the first token
of the last hidden state, as FuseMix and freeze-align use for DINOv2), `pooler` (the model's
pooler output) or `mean` over patch tokens. `projection: true` (CLIP, SigLIP) is the checkpoint's
own image embedding instead: its pooling and its projection into its image-text space
(``fuse.load_hf_tower``), so the tower gives the reference's own numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

import fuse


class HFVisionEncoder(fuse.Encoder):
    """A transformers image encoder (AutoModel + AutoImageProcessor)."""

    class Options(fuse.Options):
        model: str                                          # hub id, local dir or pkg:...
        pooling: Literal["cls", "pooler", "mean"] = "cls"
        revision: str | None = None
        num_layers: int | None = None                       # keep only the first k transformer layers
        gradient_checkpointing: bool = False                # unfrozen: recompute activations in backward
        # Every dropout probability of the config (0 also turns drop-path off): 0 makes an unfrozen tower's
        # chunked and multi-rank steps equal the plain one exactly; None keeps the checkpoint's own.
        dropout: float | None = Field(None, ge=0.0, lt=1.0)
        # CLIP, SigLIP: the checkpoint's own pooled and projected embedding (its joint space); pooling is its own.
        projection: bool = False

    def __init__(self, options: Options):
        super().__init__()
        from transformers import AutoImageProcessor

        self.options = options
        src = fuse.hf_source(options.model)
        self.processor = fuse.load_hf(AutoImageProcessor, src, options.revision)
        if options.projection:
            self._load_tower(options)
        else:
            self._load(options, src)
        self.info = fuse.EncoderInfo(modality="image", input="image", dim=self.info_dim, source=options.model,
                                image_size=self.image_size if isinstance(self.image_size, int) else None,
                                mean=tuple(getattr(self.processor, "image_mean", ()) or ()) or None,
                                std=tuple(getattr(self.processor, "image_std", ()) or ()) or None)

    def _load_tower(self, options: Options) -> None:
        if options.num_layers is not None or options.gradient_checkpointing:
            raise fuse.RecipeError("projection: true keeps the reference's whole image tower; remove num_layers and "
                                   "gradient_checkpointing.")
        self.model = fuse.load_hf_tower(options.model, options.revision, "image", options.dropout)
        self.info_dim, self.image_size = self.model.dim(), self.model.config.vision_config.image_size

    def _load(self, options: Options, src: str) -> None:
        from transformers import AutoModel

        model = fuse.load_hf(AutoModel, src, options.revision, dropout=options.dropout)
        # Dual-encoder checkpoints (CLIP, SigLIP): keep only the vision tower.
        self.model = getattr(model, "vision_model", model)
        fuse.truncate_layers(self.model, options.num_layers)
        if options.gradient_checkpointing:  # on the full model: a CLIP vision tower is not a PreTrainedModel
            fuse.enable_hf_checkpointing(model, options.model)
        cfg = getattr(self.model, "config", model.config)
        self.info_dim, self.image_size = cfg.hidden_size, getattr(cfg, "image_size", None)
        self._full_model = model

    def preprocess(self, raw: list) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.processor(images=list(raw), return_tensors="pt")["pixel_values"]}

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.options.projection:
            raise fuse.RecipeError(f"{self.options.model}: projection: true gives pooled embeddings only, not the "
                                   "tokens a fusion module needs; remove projection or the fusion section.")
        tokens = self.model(pixel_values=batch["pixel_values"]).last_hidden_state
        return tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.options.projection:
            return self.model(pixel_values=batch["pixel_values"])
        out = self.model(pixel_values=batch["pixel_values"])
        if self.options.pooling == "pooler":
            if getattr(out, "pooler_output", None) is None:
                raise fuse.RecipeError(f"{self.options.model} has no pooler output; use pooling: cls or mean.")
            return out.pooler_output
        tokens = out.last_hidden_state
        return tokens[:, 0] if self.options.pooling == "cls" else tokens[:, 1:].mean(1)

    def preprocessing_signature(self) -> dict[str, Any]:
        signature = {"processor": self.processor.to_dict(), "pooling": self.options.pooling}
        return {**signature, "projection": True} if self.options.projection else signature

    def save(self, directory: Path) -> dict[str, Any]:
        if self.options.projection:
            fuse.save_hf_tower(directory, self.model, self.processor)
            return {**self.options.model_dump(), "model": "./", "revision": None, "dropout": None}
        fuse.save_hf(directory, self._full_model, self.processor)
        # The saved config already has the truncated depth.
        return {**self.options.model_dump(), "model": "./", "revision": None, "num_layers": None,
                "gradient_checkpointing": False, "dropout": None}


@fuse.hookimpl
def register_encoders(register):
    register("hf-vision", HFVisionEncoder, modalities=("image",))
