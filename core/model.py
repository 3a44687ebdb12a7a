"""AlignedModel: two encoders and their heads (and optionally a shared fusion module),
mapping each modality into one shared space.

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
from .latents import Tokens
from .plugin_manager import registry


class AlignedModel(nn.Module):
    """encoders[m] -> latent, heads[m] (then fusion, if any) -> shared embedding."""

    def __init__(self, encoders: dict[str, nn.Module], heads: dict[str, nn.Module], embed_dim: int,
                 specs: dict[str, dict], fusion: nn.Module | None = None, fusion_spec: dict | None = None):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.heads = nn.ModuleDict(heads)
        self.fusion = fusion
        self.embed_dim = embed_dim
        self.specs = specs  # modality -> {"encoder": {name, options}, "head": {name, options}}
        self.fusion_spec = fusion_spec

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.encoders.keys())

    @property
    def uses_tokens(self) -> bool:
        """With a fusion module the towers hand over token sequences, not pooled latents."""
        return self.fusion is not None

    def input_kind(self, modality: str) -> str:
        return self._encoder(modality).info.input

    def _encoder(self, modality: str):
        if modality not in self.encoders:
            raise FuseError(f"This model aligns {' and '.join(self.modalities)}; it has no '{modality}' tower.")
        return self.encoders[modality]

    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device

    def encode_batch(self, modality: str, batch: dict[str, torch.Tensor]):
        """Encoder output for a preprocessed batch: pooled [B, D] or Tokens (with a fusion)."""
        enc = self.encoders[modality]
        return Tokens(*enc.forward_tokens(batch)) if self.uses_tokens else enc(batch)

    def forward_head(self, modality: str, latents):
        """Unnormalised shared-space embeddings from latents (the trainable part)."""
        if self.fusion is None:
            return self.heads[modality](latents)
        return self.fusion(modality, self.heads[modality](latents.values.float()), latents.mask)

    def encode(self, modality: str, values: list, batch_size: int = 32, progress: bool = False,
               num_workers: int = 0):
        """Encoder latents for raw inputs or manifest values (file paths, text)."""
        enc = self._encoder(modality)
        return encode_values(enc, list(values), self.device, batch_size, num_workers,
                             desc=f"encoding {modality}" if progress else None, tokens=self.uses_tokens)

    @torch.no_grad()
    def project(self, modality: str, latents, batch_size: int = 4096) -> torch.Tensor:
        """Shared-space embeddings, L2-normalised, for encoder latents (in batches)."""
        self._encoder(modality)
        was = self.training
        self.eval()
        out = []
        for i in range(0, len(latents), batch_size):
            part = latents[i:i + batch_size].to(self.device)
            out.append(F.normalize(self.forward_head(modality, part).float(), dim=-1))
        self.train(was)
        return torch.cat(out) if out else torch.empty(0, self.embed_dim)

    def embed(self, modality: str, values: list, batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """L2-normalised embeddings [N, embed_dim] for raw inputs (PIL, str, AudioClip) or file paths."""
        return self.project(modality, self.encode(modality, values, batch_size, progress))

    def with_untrained_heads(self, seed: int = 0) -> "AlignedModel":
        """The same encoders with freshly initialised heads: the 'before training' baseline."""
        torch.manual_seed(seed)
        heads, fusion = build_trainable(self.specs, {m: e.info.dim for m, e in self.encoders.items()},
                                        self.embed_dim, self.fusion_spec)
        return AlignedModel(dict(self.encoders), heads, self.embed_dim, self.specs, fusion,
                            self.fusion_spec).to(self.device)


def build_encoder(spec: dict, where: str):
    return registry("encoder").create(spec["name"], spec.get("options", {}), where)


def build_trainable(specs: dict[str, dict], dims: dict[str, int], embed_dim: int, fusion_spec: dict | None):
    """Heads (and the fusion module): what training learns."""
    modalities = tuple(specs)
    fusion = None
    head_out = embed_dim
    if fusion_spec:
        fusion_options = registry("fusion").parse_options(fusion_spec["name"], fusion_spec.get("options"), "fusion")
        head_out = fusion_options.width
        fusion = registry("fusion").create(fusion_spec["name"], fusion_spec.get("options", {}), "fusion",
                                           modalities=modalities, width=head_out, out_dim=embed_dim)
    heads = {m: registry("head").create(s["head"]["name"], s["head"].get("options", {}), f"modalities.{m}.head",
                                        in_dim=dims[m], out_dim=head_out)
             for m, s in specs.items()}
    return heads, fusion


def build_model(modalities: dict[str, dict], embed_dim: int, encoders: dict | None = None,
                fusion: dict | None = None) -> AlignedModel:
    """Build from specs {modality: {"encoder": {name, options}, "head": {name, options}}}."""
    encoders = dict(encoders or {})
    for m, spec in modalities.items():
        if m not in encoders:
            encoders[m] = build_encoder(spec["encoder"], f"modalities.{m}.encoder")
        enc = encoders[m]
        enc.info = dataclasses.replace(enc.info, modality=m)  # the recipe's name for this tower
    specs = {m: {"encoder": {"name": s["encoder"]["name"], "options": s["encoder"].get("options", {})},
                 "head": {"name": s["head"]["name"], "options": s["head"].get("options", {})}}
             for m, s in modalities.items()}
    fusion_spec = {"name": fusion["name"], "options": fusion.get("options", {})} if fusion else None
    heads, fusion_module = build_trainable(specs, {m: e.info.dim for m, e in encoders.items()}, embed_dim, fusion_spec)
    return AlignedModel(encoders, heads, embed_dim, specs, fusion_module, fusion_spec)
