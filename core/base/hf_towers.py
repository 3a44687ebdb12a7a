"""One tower of a transformers dual encoder (CLIPModel, SiglipModel, ClapModel) with its own projection,
for `hf-vision` and `hf-text` (``projection: true``: reference models, docs/references.md); on the plugin
surface as ``fuse.load_hf_tower`` / ``fuse.save_hf_tower``.

A reference's numbers come from its own joint space: CLIP's image tower is its vision transformer's
pooled output through ``visual_projection``, its text tower the EOS token through ``text_projection``;
SigLIP's towers end in their own heads (attention pooling, last-token linear), CLAP's text tower in its
projection MLP. A tower saved here is the checkpoint's config (the whole model's, so the architecture
rebuilds offline), ``tower.safetensors`` (this tower and its projection only) and its processor.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fuse.base.errors import ModelFileError, RecipeError
from fuse.base.hf import hf_source, load_hf
from fuse.base.weights import load_state_dict, save_state_dict

# (model_type, input) -> (the tower's attribute on the full model, its projection's, or None: inside the tower)
PARTS = {("clip", "image"): ("vision_model", "visual_projection"), ("clip", "text"): ("text_model", "text_projection"),
         ("siglip", "image"): ("vision_model", None), ("siglip", "text"): ("text_model", None),
         ("clap", "text"): ("text_model", "text_projection")}
WEIGHTS = "tower.safetensors"
# LAION-CLAP tokenizes every caption to 77 tokens (laion_clap's hook.py), whatever RoBERTa's own limit.
CLAP_CONTEXT = 77


class ProjectedTower(nn.Module):
    """A reference's tower and its projection into the reference's joint space."""

    def __init__(self, tower: nn.Module, projection: nn.Module | None, config, kind: str):
        super().__init__()
        self.tower, self.projection = tower, projection if projection is not None else nn.Identity()
        self.config, self.kind = config, kind  # the whole model's config; "image" or "text"

    @property
    def model_type(self) -> str:
        return self.config.model_type

    def dim(self) -> int:
        """Width of the joint space this tower maps into."""
        if isinstance(self.projection, nn.Linear):
            return self.projection.out_features
        if self.model_type == "clap":
            return self.config.projection_dim
        head = getattr(self.tower, "head", None)
        if isinstance(head, nn.Linear):  # SigLIP's text tower: the last token through a linear head
            return head.out_features
        return self.config.vision_config.hidden_size  # SigLIP's image tower: attention pooling keeps the width

    def context_length(self) -> int:
        """Tokens the reference's text tower was trained on: CLIP's 77 and SigLIP's 64 positions, LAION-CLAP's 77."""
        return CLAP_CONTEXT if self.model_type == "clap" else self.config.text_config.max_position_embeddings

    def forward(self, **inputs) -> torch.Tensor:
        """The reference's unnormalised embedding (what its get_*_features returns before normalising)."""
        return self.projection(self.tower(**inputs).pooler_output)


def load_hf_tower(model: str, revision: str | None, kind: str, dropout: float | None = None) -> ProjectedTower:
    """The ``kind`` tower of a CLIP, SigLIP or CLAP checkpoint (hub id, local dir, or a folder fuse saved)."""
    from transformers import AutoConfig, AutoModel

    src = hf_source(model)
    config = load_hf(AutoConfig, src, revision, dropout=dropout)
    parts = PARTS.get((config.model_type, kind))
    if parts is None:
        known = ", ".join(sorted({t for t, k in PARTS if k == kind}))
        raise RecipeError(f"projection: true needs the {kind} tower of a full {known} checkpoint with its "
                               f"projection; {model} is a '{config.model_type}' model. Give such a checkpoint or remove "
                               "projection.")
    saved = Path(src) / WEIGHTS
    if saved.is_file():  # a tower fuse saved: rebuild the architecture from the config, load this tower's weights
        full = AutoModel.from_config(config)
    else:
        full = load_hf(AutoModel, src, revision, config=config)
    tower, projection = getattr(full, parts[0]), getattr(full, parts[1]) if parts[1] else None
    module = ProjectedTower(tower, projection, config, kind)
    if saved.is_file():
        state = load_state_dict(saved)
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelFileError(f"{saved} does not fit {src}/config.json: {str(exc).splitlines()[0]}") from None
    return module.eval()


def save_hf_tower(directory: Path, module: ProjectedTower, *processors) -> None:
    """The whole model's config, this tower's weights (safetensors) and its processors, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    module.config.save_pretrained(str(directory))
    save_state_dict(module, directory / WEIGHTS)
    for proc in processors:
        proc.save_pretrained(str(directory))
