"""Text encoders from transformers: AutoTokenizer + AutoModel, mean or CLS pooling.

Works with any encoder-only checkpoint (BERT, RoBERTa, MiniLM, E5, BGE, sentence-transformers
models) from a hub id, a local directory, or a directory shipped in a package (`pkg:`).

`projection: true` is the text tower of a CLIP, SigLIP or CLAP checkpoint with its own pooling and
projection into its joint space (``fuse.load_hf_tower``), tokenized as the reference was: CLIP to its 77
positions, SigLIP padded to its 64 (padding="max_length", no attention mask, as SigLIP trained and
its last token pools), CLAP to LAION-CLAP's 77.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

import fuse


class HFTextEncoder(fuse.Encoder):
    """A transformers text encoder; pooled over the attention mask (mean) or the first token (cls)."""

    class Options(fuse.Options):
        model: str                                  # hub id, local dir or pkg:<package>/<dir>
        pooling: Literal["mean", "cls"] = "mean"
        max_length: int | None = None                       # None: 128, or the reference's context (projection)
        revision: str | None = None
        num_layers: int | None = None                       # keep only the first k transformer layers
        # Unfrozen: keep only each layer's input and recompute its activations in backward
        # (less memory, about one more forward of time; same gradients, dropout included).
        gradient_checkpointing: bool = False
        init_seed: int | None = None                        # random-init control: the architecture, random weights
        # Every dropout probability of the checkpoint's config (hidden, attention, ...); 0 turns dropout
        # off, so an unfrozen tower's chunked (GradCache) and multi-rank steps equal the plain one exactly.
        # None keeps the checkpoint's own (e.g. 0.1 for BERT/MiniLM).
        dropout: float | None = Field(None, ge=0.0, lt=1.0)
        # CLIP, SigLIP, CLAP: the checkpoint's own pooled and projected text embedding (its joint space).
        projection: bool = False

    def __init__(self, options: Options):
        super().__init__()
        from transformers import AutoTokenizer

        self.options = options
        src = fuse.hf_source(options.model)
        self.tokenizer = fuse.load_hf(AutoTokenizer, src, options.revision)
        self.max_length = options.max_length or 128
        self.padding, self.inputs = True, ("input_ids", "attention_mask", "token_type_ids")
        if options.projection:
            return self._load_tower(options)
        self._load(options, src)
        fuse.truncate_layers(self.model, options.num_layers)
        if options.gradient_checkpointing:
            fuse.enable_hf_checkpointing(self.model, options.model)
        cfg = self.model.config
        self.info = fuse.EncoderInfo(modality="text", input="text", dim=cfg.hidden_size, source=options.model,
                                license=str(getattr(cfg, "license", "") or ""))

    def _load_tower(self, options: Options) -> None:
        if options.num_layers is not None or options.gradient_checkpointing or options.init_seed is not None:
            raise fuse.RecipeError("projection: true keeps the reference's whole text tower and weights; remove "
                                   "num_layers, gradient_checkpointing and init_seed.")
        self.model = fuse.load_hf_tower(options.model, options.revision, "text", options.dropout)
        self.max_length = options.max_length or self.model.context_length()
        if self.model.model_type == "siglip":  # trained on padded positions without a mask: its last one pools
            self.padding, self.inputs = "max_length", ("input_ids",)
        self.info = fuse.EncoderInfo(modality="text", input="text", dim=self.model.dim(), source=options.model)

    def _load(self, options: Options, src: str) -> None:
        from transformers import AutoModel

        if options.init_seed is None:
            self.model = fuse.load_hf(AutoModel, src, options.revision, dropout=options.dropout)
        else:
            from transformers import AutoConfig

            with torch.random.fork_rng():   # leaves the global RNG as it was
                torch.manual_seed(options.init_seed)
                self.model = AutoModel.from_config(fuse.load_hf(AutoConfig, src, options.revision,
                                                                  dropout=options.dropout))

    def preprocess(self, raw: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(raw), padding=self.padding, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: v for k, v in enc.items() if k in self.inputs}

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.options.projection:
            raise fuse.RecipeError(f"{self.options.model}: projection: true gives pooled embeddings only, not the "
                                   "tokens a fusion module needs; remove projection or the fusion section.")
        out = self.model(**batch).last_hidden_state
        return out, batch["attention_mask"].bool()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.options.projection:
            return self.model(**batch)
        tokens, mask = self.forward_tokens(batch)
        if self.options.pooling == "cls":
            return tokens[:, 0]
        return fuse.masked_mean(tokens, mask)

    def preprocessing_signature(self) -> dict[str, Any]:
        signature = {"tokenizer": type(self.tokenizer).__name__, "vocab_size": self.tokenizer.vocab_size,
                     "max_length": self.max_length, "pooling": self.options.pooling,
                     "lowercase": getattr(self.tokenizer, "do_lower_case", None)}
        return {**signature, "projection": self.model.model_type} if self.options.projection else signature

    def sentence_transformers_config(self) -> dict[str, Any] | None:
        if self.options.projection:  # sentence-transformers has no module for a reference's projection
            return None
        return {"pooling": self.options.pooling, "max_length": self.max_length}

    def save(self, directory: Path) -> dict[str, Any]:
        if self.options.projection:
            fuse.save_hf_tower(directory, self.model, self.tokenizer)
            return {**self.options.model_dump(), "model": "./", "revision": None, "dropout": None}
        fuse.save_hf(directory, self.model, self.tokenizer)
        # The saved config already has the truncated depth.
        return {**self.options.model_dump(), "model": "./", "revision": None, "num_layers": None,
                "gradient_checkpointing": False, "init_seed": None,
                "dropout": None}  # the saved config holds the dropout it trained with


@fuse.hookimpl
def register_encoders(register):
    register("hf-text", HFTextEncoder, modalities=("text",))
