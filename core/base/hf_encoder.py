"""What every transformers encoder plugin shares (``fuse.HFEncoder``): the options about where the weights
come from and how much of them to keep, loading them (pretrained, or the architecture with random weights),
a reference's own projected tower (CLIP, SigLIP, CLAP: ``projection: true``), and ``save()``, which writes
the model as it now is and resets the options that were applied while loading.

hf-text and hf-vision (and a third-party plugin for another transformers family) subclass it and add only
what is theirs: the preprocessor, the pooling, the modality.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from fuse.base.errors import RecipeError
from fuse.base.hf import enable_checkpointing, hf_source, load_hf, save_hf, truncate_layers
from fuse.base.hf_towers import load_hf_tower, save_hf_tower
from fuse.base.interfaces import Encoder
from fuse.base.options import Options

# Options applied while loading: a saved model already has them, so its export resets them.
APPLIED_AT_LOAD = {"model": "./", "revision": None, "num_layers": None, "gradient_checkpointing": False,
                   "init_seed": None, "dropout": None}


class HFEncoder(Encoder):
    """A transformers encoder: ``self.model`` (loaded by ``load``) and ``self.preprocessor`` (set by the subclass)."""

    modality = ""  # "text", "image", "audio": the tower a reference's ``projection: true`` keeps

    class Options(Options):
        model: str                                  # hub id, local dir or pkg:<package>/<dir>
        revision: str | None = None
        num_layers: int | None = None               # keep only the first k transformer layers
        # Unfrozen: keep only each layer's input and recompute its activations in backward
        # (less memory, about one more forward of time; same gradients, dropout included).
        gradient_checkpointing: bool = False
        init_seed: int | None = None                # random-init control: the architecture, random weights
        # Every dropout probability of the checkpoint's config (0 also turns drop-path off): 0 makes an unfrozen
        # tower's chunked (GradCache) and multi-rank steps equal the plain one exactly; None keeps the checkpoint's.
        dropout: float | None = Field(None, ge=0.0, lt=1.0)
        # CLIP, SigLIP, CLAP: the checkpoint's own pooled and projected embedding (its joint space).
        projection: bool = False

    def load(self, options: Options, auto_model=None) -> Any:
        """The checkpoint's model (``auto_model``, default AutoModel) or, with ``projection``, its projected tower.
        Returns the whole loaded model; ``self.model`` is set by the caller (a part of it, for dual encoders)."""
        self.options = options
        if options.projection:
            if options.num_layers is not None or options.gradient_checkpointing or options.init_seed is not None:
                raise RecipeError(f"projection: true keeps the reference's whole {self.modality} tower and weights; "
                                  "remove num_layers, gradient_checkpointing and init_seed.")
            return load_hf_tower(options.model, options.revision, self.modality, options.dropout)
        if auto_model is None:
            from transformers import AutoModel as auto_model
        src = hf_source(options.model)
        if options.init_seed is None:
            return load_hf(auto_model, src, options.revision, dropout=options.dropout)
        from transformers import AutoConfig

        with torch.random.fork_rng():   # leaves the global RNG as it was
            torch.manual_seed(options.init_seed)
            return auto_model.from_config(load_hf(AutoConfig, src, options.revision, dropout=options.dropout))

    def adapt(self, full: Any, part: Any) -> None:
        """Apply the depth and checkpointing options to ``part`` (the layers that run) of ``full`` (what saves)."""
        truncate_layers(part, self.options.num_layers)
        if self.options.gradient_checkpointing:  # on the full model: a CLIP vision tower is not a PreTrainedModel
            enable_checkpointing(full, self.options.model)
        # Not a submodule: its weights are self.model's (and a dual encoder's other tower), which the
        # state dict, checkpoints and the optimiser must not hold twice or at all.
        self.__dict__["_full_model"] = full

    def refuse_tokens(self) -> None:
        """A reference's projected tower yields pooled embeddings only."""
        if self.options.projection:
            raise RecipeError(f"{self.options.model}: projection: true gives pooled embeddings only, not the "
                              "tokens a fusion module needs; remove projection or the fusion section.")

    def signature(self, signature: dict[str, Any]) -> dict[str, Any]:
        """``signature`` (what the preprocessing depends on) marked with the reference's projection, if any."""
        return {**signature, "projection": self.model.model_type} if self.options.projection else signature

    def save(self, directory: Path) -> dict[str, Any]:
        """The model as it is now (truncated, fine-tuned), its preprocessor, and options that reload it as such."""
        if self.options.projection:
            save_hf_tower(directory, self.model, self.preprocessor)
        else:
            save_hf(directory, self._full_model, self.preprocessor)
        return {**self.options.model_dump(), **{k: v for k, v in APPLIED_AT_LOAD.items() if k in type(self.options).model_fields}}
