# fuse_char_ngrams.py
"""A complete fuse encoder plugin in one file: hashed character n-grams (fastText-style).

It has no weights to download, so it also shows the smallest useful Encoder: options,
info, preprocess, forward, preprocessing_signature and save.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

import fuse


class CharNgramEncoder(fuse.Encoder):
    """Counts of hashed character n-grams, log-scaled: a bag-of-subwords text latent."""

    class Options(fuse.Options):
        dim: int = 1024
        n: tuple[int, ...] = (2, 3, 4)
        lowercase: bool = True

    def __init__(self, options: Options):
        super().__init__()
        self.options = options
        self.info = fuse.EncoderInfo(modality="text", input="text", dim=options.dim, source="hashing (no weights)")

    def _bucket(self, gram: str) -> int:
        return int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=4).digest(), "little") % self.options.dim

    def preprocess(self, raw: list[str]) -> dict[str, torch.Tensor]:
        counts = torch.zeros(len(raw), self.options.dim)
        for row, text in enumerate(raw):
            text = f" {text.lower() if self.options.lowercase else text} "
            for n in self.options.n:
                for i in range(len(text) - n + 1):
                    counts[row, self._bucket(text[i:i + n])] += 1
        return {"counts": counts}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.log1p(batch["counts"])

    def preprocessing_signature(self) -> dict:
        return self.options.model_dump()

    def save(self, directory: Path) -> dict:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(self.options.model_dump()))
        return self.options.model_dump()


@fuse.hookimpl
def register_encoders(register):
    register("char-ngrams", CharNgramEncoder, modalities=("text",))
