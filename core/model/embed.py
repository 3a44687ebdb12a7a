"""Using an aligned model: towers as modules, embeddings of many inputs, similarity.

``fuse.load(path)`` returns an ``AlignedModel``; its ``embed``, ``similarity``, ``search`` and
``towers`` are thin wrappers over this module, and `fuse embed` / `fuse search` call the same
functions, so the CLI and the Python API give the same numbers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fuse.base.errors import FuseError
from fuse.base.inputs import input_kind


class Tower(nn.Module):
    """One modality's encoder and head (and the shared fusion, if any) as a single module:
    ``tower(batch)`` maps a preprocessed batch to L2-normalised embeddings, ``tower.embed(inputs)``
    takes raw inputs (file paths, text, PIL images). It shares its parameters with the model."""

    def __init__(self, model, modality: str):
        super().__init__()
        model.encoder(modality)  # an unknown modality names the towers there are
        self.modality = modality
        self.encoder, self.head, self.fusion = model.encoders[modality], model.heads[modality], model.fusion
        self.training = model.training  # the mode its (shared) modules are in: eval for a loaded model

    def preprocess(self, inputs: list) -> dict[str, torch.Tensor]:
        """Raw inputs (or values: paths, text) -> the encoder's batch tensors, on the CPU."""
        kind = self.encoder.info.input
        return self.encoder.preprocess([input_kind(kind).read(v) if isinstance(v, str) else v for v in inputs])

    def forward(self, batch) -> torch.Tensor:
        """L2-normalised embeddings [B, D] of a preprocessed batch, or of a list of raw inputs
        (preprocessed first); gradients flow, for fine-tuning."""
        if isinstance(batch, (list, tuple)):
            batch = self.preprocess(list(batch))
        device = next(self.head.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        if self.fusion is None:
            z = self.head(self.encoder(batch))
        else:
            tokens, mask = self.encoder.forward_tokens(batch)
            z = self.fusion(self.modality, self.head(tokens.float()), mask)
        return F.normalize(z.float(), dim=-1)

    @torch.no_grad()
    def embed(self, inputs: list, batch_size: int = 32) -> torch.Tensor:
        """L2-normalised embeddings [N, D] of raw inputs, in batches, in eval mode."""
        was = self.training
        self.eval()
        out = [self(self.preprocess(inputs[i:i + batch_size])) for i in range(0, len(inputs), batch_size)]
        self.train(was)
        return torch.cat(out) if out else torch.empty(0, self.head.out_dim)


def model_fingerprint(model) -> str:
    """What makes two models give the same embeddings: every tower's registered names and
    preprocessing, the embedding size and every weight (encoders, heads, fusion). An index
    records it, so one built by another model is refused instead of searched."""
    from fuse.data.cache import weights_fingerprint

    blob = json.dumps({"embed_dim": model.embed_dim,
                       "towers": {m: {"encoder": model.specs[m]["encoder"].name, "head": model.specs[m]["head"].name,
                                      "preprocessing": model.encoders[m].preprocessing_signature()}
                                  for m in model.modalities},
                       "fusion": model.fusion_spec.name if model.fusion_spec else None}, sort_keys=True, default=str)
    return hashlib.sha256((blob + weights_fingerprint(model)).encode()).hexdigest()[:32]


def embed_values(model, modality: str, values: list, batch_size: int = 32, cache_dir: Path | None = None,
                 num_workers: int = 0, progress: bool = False) -> torch.Tensor:
    """Embeddings [N, D] on the CPU. With ``cache_dir`` and values that are all paths or text, the
    encoder's latents come from (and go to) the latent cache training uses, keyed by its weights
    and preprocessing, so inputs a run already encoded are not encoded again."""
    latents = model.encode(modality, values, batch_size, progress, num_workers=num_workers, cache_dir=cache_dir)
    return model.project(modality, latents).cpu()


def as_embeddings(model, x) -> torch.Tensor:
    """An embedding tensor ([D] or [N, D]) as [N, D]; a ``(modality, inputs)`` pair is embedded first."""
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str):
        return model.embed(x[0], list(x[1]))
    if not isinstance(x, torch.Tensor):
        raise FuseError("similarity() takes embedding tensors or (modality, inputs) pairs, e.g. "
                        "model.similarity(('text', ['a cat']), ('image', ['cat.png']))")
    return x.reshape(1, -1) if x.dim() == 1 else x


def similarity(model, a, b) -> torch.Tensor:
    """Cosine similarities [Na, Nb] between two sets of embeddings (or (modality, inputs) pairs)."""
    a, b = as_embeddings(model, a), as_embeddings(model, b)
    if a.shape[-1] != b.shape[-1]:
        raise FuseError(f"similarity(): embeddings of size {a.shape[-1]} and {b.shape[-1]}; both must come from "
                        f"this model ({model.embed_dim}-d).")
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T






