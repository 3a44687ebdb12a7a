"""AlignedModel: two encoders and their heads, mapping each modality into one shared space.

The same object is trained by `fuse train`, exported by `fuse export` and returned by
`fuse.load`, so training-time evaluation and users' embeddings run the same code.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .cache import encode_values
from .errors import FuseError
from .plugin_manager import registry


class AlignedModel(nn.Module):
    """encoders[m] -> latent, heads[m] -> shared embedding, for the two modalities m."""

    def __init__(self, encoders: dict[str, nn.Module], heads: dict[str, nn.Module], embed_dim: int,
                 specs: dict[str, dict]):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.heads = nn.ModuleDict(heads)
        self.embed_dim = embed_dim
        self.specs = specs  # modality -> {"encoder": {name, options}, "head": {name, options}}

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.encoders.keys())

    def input_kind(self, modality: str) -> str:
        return self._encoder(modality).info.input

    def _encoder(self, modality: str):
        if modality not in self.encoders:
            raise FuseError(f"This model aligns {' and '.join(self.modalities)}; it has no '{modality}' tower.")
        return self.encoders[modality]

    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device

    def encode(self, modality: str, values: list, batch_size: int = 32, progress: bool = False,
               num_workers: int = 0) -> torch.Tensor:
        """Encoder latents [N, D_enc] for raw inputs or manifest values (file paths, text)."""
        enc = self._encoder(modality)
        return encode_values(enc, list(values), self.device, batch_size, num_workers,
                             desc=f"encoding {modality}" if progress else None)

    def project(self, modality: str, latents: torch.Tensor) -> torch.Tensor:
        """Shared-space embeddings, L2-normalised, for encoder latents."""
        self._encoder(modality)
        head = self.heads[modality]
        with torch.no_grad():
            was = head.training
            head.eval()
            z = head(latents.to(self.device, dtype=torch.float32))
            head.train(was)
        return F.normalize(z.float(), dim=-1)

    def embed(self, modality: str, values: list, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """L2-normalised embeddings [N, embed_dim] for raw inputs (PIL, str, AudioClip) or file paths."""
        return self.project(modality, self.encode(modality, values, batch_size, progress))

    def with_untrained_heads(self, seed: int = 0) -> "AlignedModel":
        """The same encoders with freshly initialised heads: the 'before training' baseline."""
        torch.manual_seed(seed)
        heads = {m: build_head(self.specs[m]["head"], self.encoders[m].info.dim, self.embed_dim, m)
                 for m in self.modalities}
        return AlignedModel(dict(self.encoders), heads, self.embed_dim, self.specs).to(self.device)


def build_encoder(spec: dict, where: str):
    return registry("encoder").create(spec["name"], spec.get("options", {}), where)


def build_head(spec: dict, in_dim: int, out_dim: int, modality: str):
    return registry("head").create(spec["name"], spec.get("options", {}), f"modalities.{modality}.head",
                                   in_dim=in_dim, out_dim=out_dim)


def build_model(modalities: dict[str, dict], embed_dim: int, encoders: dict | None = None) -> AlignedModel:
    """Build from specs {modality: {"encoder": {name, options}, "head": {name, options}}}."""
    encoders = dict(encoders or {})
    for m, spec in modalities.items():
        if m not in encoders:
            encoders[m] = build_encoder(spec["encoder"], f"modalities.{m}.encoder")
        enc = encoders[m]
        enc.info = dataclasses.replace(enc.info, modality=m)  # the recipe's name for this tower
    heads = {m: build_head(spec["head"], encoders[m].info.dim, embed_dim, m) for m, spec in modalities.items()}
    specs = {m: {"encoder": {"name": s["encoder"]["name"], "options": s["encoder"].get("options", {})},
                 "head": {"name": s["head"]["name"], "options": s["head"].get("options", {})}}
             for m, s in modalities.items()}
    return AlignedModel(encoders, heads, embed_dim, specs)
