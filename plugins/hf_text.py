"""Text encoders from transformers: AutoTokenizer + AutoModel, mean or CLS pooling.

Works with any encoder-only checkpoint (BERT, RoBERTa, MiniLM, E5, BGE, sentence-transformers
models) from a hub id, a local directory, or a directory shipped in a package (`pkg:`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

import fuse

CHARS_PER_TOKEN = 32   # text past max_length x this many characters cannot reach the kept tokens


class HFTextEncoder(fuse.Encoder):
    """A transformers text encoder; pooled over the attention mask (mean) or the first token (cls)."""

    class Options(fuse.Options):
        model: str                                  # hub id, local dir or pkg:<package>/<dir>
        pooling: Literal["mean", "cls"] = "mean"
        max_length: int = 128
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

    def __init__(self, options: Options):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.options = options
        src = fuse.hf_source(options.model)
        self.tokenizer = fuse.load_hf(AutoTokenizer, src, options.revision)
        if options.init_seed is None:
            self.model = fuse.load_hf(AutoModel, src, options.revision, dropout=options.dropout)
        else:
            from transformers import AutoConfig

            with torch.random.fork_rng():   # leaves the global RNG as it was
                torch.manual_seed(options.init_seed)
                self.model = AutoModel.from_config(fuse.load_hf(AutoConfig, src, options.revision,
                                                                  dropout=options.dropout))
        fuse.truncate_layers(self.model, options.num_layers)
        if options.gradient_checkpointing:
            fuse.enable_hf_checkpointing(self.model, options.model)
        cfg = self.model.config
        self.info = fuse.EncoderInfo(modality="text", input="text", dim=cfg.hidden_size, source=options.model,
                                license=str(getattr(cfg, "license", "") or ""))

    def preprocess(self, raw: list[str]) -> dict[str, torch.Tensor]:
        # Cut before tokenizing: a tokenizer reads the whole string (a 20 MB caption cost 3.8 GB) to keep
        # max_length tokens, and no token is longer than CHARS_PER_TOKEN characters.
        cut = self.options.max_length * CHARS_PER_TOKEN
        enc = self.tokenizer([t[:cut] for t in raw], padding=True, truncation=True, max_length=self.options.max_length,
                             return_tensors="pt")
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(**batch).last_hidden_state
        return out, batch["attention_mask"].bool()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens, mask = self.forward_tokens(batch)
        if self.options.pooling == "cls":
            return tokens[:, 0]
        return fuse.masked_mean(tokens, mask)

    def preprocessing_signature(self) -> dict[str, Any]:
        return {"tokenizer": type(self.tokenizer).__name__, "vocab_size": self.tokenizer.vocab_size,
                "max_length": self.options.max_length, "pooling": self.options.pooling,
                "lowercase": getattr(self.tokenizer, "do_lower_case", None)}

    def sentence_transformers_config(self) -> dict[str, Any]:
        return {"pooling": self.options.pooling, "max_length": self.options.max_length}

    def save(self, directory: Path) -> dict[str, Any]:
        fuse.save_hf(directory, self.model, self.tokenizer)
        # The saved config already has the truncated depth.
        return {**self.options.model_dump(), "model": "./", "revision": None, "num_layers": None,
                "gradient_checkpointing": False, "init_seed": None,
                "dropout": None}  # the saved config holds the dropout it trained with


@fuse.hookimpl
def register_encoders(register):
    register("hf-text", HFTextEncoder, modalities=("text",))
