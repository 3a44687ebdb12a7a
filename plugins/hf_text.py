"""Text encoders from transformers: AutoTokenizer + AutoModel, mean or CLS pooling.

Works with any encoder-only checkpoint (BERT, RoBERTa, MiniLM, E5, BGE, sentence-transformers
models) from a hub id, a local directory, or a directory shipped in a package (`pkg:`).

`projection: true` is the text tower of a CLIP, SigLIP or CLAP checkpoint with its own pooling and
projection into its joint space (``fuse.load_hf_tower``), tokenized as the reference was: CLIP to its 77
positions, SigLIP padded to its 64 (padding="max_length", no attention mask, as SigLIP trained and
its last token pools), CLAP to LAION-CLAP's 77. Loading, options and save() are ``fuse.HFEncoder``'s.
"""

from __future__ import annotations

from typing import Any, Literal

import torch

import fuse

CHARS_PER_TOKEN = 32   # text past max_length x this many characters cannot reach the kept tokens


class HFTextEncoder(fuse.HFEncoder):
    """A transformers text encoder; pooled over the attention mask (mean) or the first token (cls)."""

    modality = "text"

    class Options(fuse.HFEncoder.Options):
        pooling: Literal["mean", "cls"] = "mean"
        max_length: int | None = None                       # None: 128, or the reference's context (projection)

    def __init__(self, options: Options):
        super().__init__()
        from transformers import AutoTokenizer

        self.preprocessor = self.tokenizer = fuse.load_hf(AutoTokenizer, fuse.hf_source(options.model), options.revision)
        self.model = self.load(options)
        self.padding, self.inputs = True, ("input_ids", "attention_mask", "token_type_ids")
        if options.projection:
            self.max_length, dim = options.max_length or self.model.context_length(), self.model.dim()
            if self.model.model_type == "siglip":  # trained on padded positions without a mask: its last one pools
                self.padding, self.inputs = "max_length", ("input_ids",)
        else:
            self.adapt(self.model, self.model)
            self.max_length, dim = options.max_length or 128, self.model.config.hidden_size
        self.info = fuse.EncoderInfo(modality="text", input="text", dim=dim, source=options.model,
                                     license=str(getattr(self.model.config, "license", "") or ""))

    def preprocess(self, raw: list[str]) -> dict[str, torch.Tensor]:
        # Cut before tokenizing: a tokenizer reads the whole string (a 20 MB caption cost 3.8 GB) to keep
        # max_length tokens, and no token is longer than CHARS_PER_TOKEN characters.
        cut = self.max_length * CHARS_PER_TOKEN
        enc = self.tokenizer([t[:cut] for t in raw], padding=self.padding, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {k: v for k, v in enc.items() if k in self.inputs}

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        self.refuse_tokens()
        return self.model(**batch).last_hidden_state, batch["attention_mask"].bool()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.options.projection:
            return self.model(**batch)
        tokens, mask = self.forward_tokens(batch)
        return tokens[:, 0] if self.options.pooling == "cls" else fuse.masked_mean(tokens, mask)

    def preprocessing_signature(self) -> dict[str, Any]:
        return self.signature({"tokenizer": type(self.tokenizer).__name__, "vocab_size": self.tokenizer.vocab_size,
                               "max_length": self.max_length, "pooling": self.options.pooling,
                               "lowercase": getattr(self.tokenizer, "do_lower_case", None)})

    def sentence_transformers_config(self) -> dict[str, Any] | None:
        if self.options.projection:  # sentence-transformers has no module for a reference's projection
            return None
        return {"pooling": self.options.pooling, "max_length": self.max_length}


@fuse.hookimpl
def register_encoders(register):
    register("hf-text", HFTextEncoder, modalities=("text",))
