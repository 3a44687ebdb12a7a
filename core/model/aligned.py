"""AlignedModel: one encoder and head per modality (and optionally a shared fusion module),
mapping every modality into one shared space.

The same object is trained by `fuse train`, exported by `fuse export` and returned by
`fuse.load`, so training-time evaluation and users' embeddings run the same code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fuse.base.errors import FuseError, RecipeError
from fuse.base.interfaces import EncoderInfo
from fuse.base.latents import Tokens
from fuse.data.cache import EncodeOptions, cached_latents, encode_values
from fuse.recipes.spec import Spec, resolve_spec


class AlignedModel(nn.Module):
    """encoders[m] -> latent, heads[m] (then fusion, if any) -> shared embedding, for any number of towers."""

    def __init__(self, encoders: dict[str, nn.Module], heads: dict[str, nn.Module], embed_dim: int,
                 specs: dict[str, dict[str, Spec]], fusion: nn.Module | None = None, fusion_spec: Spec | None = None):
        super().__init__()
        self.encoders = nn.ModuleDict(encoders)
        self.heads = nn.ModuleDict(heads)
        self.fusion = fusion
        self.embed_dim = embed_dim
        self.specs = specs  # modality -> {"encoder": Spec, "head": Spec}
        self.fusion_spec = fusion_spec

    @property
    def modalities(self) -> tuple[str, ...]:
        """The towers' names, in the order the model was built."""
        return tuple(self.encoders.keys())

    @property
    def uses_tokens(self) -> bool:
        """With a fusion module the towers hand over token sequences, not pooled latents."""
        return self.fusion is not None

    def input_kind(self, modality: str) -> str:
        """The registered input kind the modality's encoder consumes (how its values are read)."""
        return self.encoder(modality).info.input

    def encoder(self, modality: str) -> nn.Module:
        """The modality's encoder; a FuseError naming the towers there are when the model has no such
        tower (how callers check a user-given modality before doing any work)."""
        if modality not in self.encoders:
            raise FuseError(f"This model has towers {', '.join(self.modalities)}; it has no '{modality}' tower.")
        return self.encoders[modality]

    @property
    def device(self) -> torch.device:
        """Where the heads live (the device embeddings are computed on); the encoders' device when no head
        has parameters (a reference model's identity heads)."""
        for params in (self.heads.parameters(), self.parameters()):
            first = next(params, None)
            if first is not None:
                return first.device
        return torch.device("cpu")

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
               num_workers: int = 0, cache_dir=None):
        """Encoder latents for raw inputs or manifest values (file paths, text). With ``cache_dir``,
        manifest values go through the latent store there: latents training already cached for the
        same weights and preprocessing are read, not recomputed (whatever paths the options hold)."""
        enc = self.encoder(modality)
        if cache_dir is not None and values and all(isinstance(v, str) for v in values):
            return cached_latents(enc, {"name": self.specs[modality]["encoder"].name}, list(values),
                                  Path(cache_dir).expanduser(), self.device,
                                  EncodeOptions(batch_size, num_workers, label=modality, tokens=self.uses_tokens,
                                                verbose=progress))
        return encode_values(enc, list(values), self.device, batch_size, num_workers,
                             desc=f"encoding {modality}" if progress else None, tokens=self.uses_tokens)

    @torch.no_grad()
    def project(self, modality: str, latents, batch_size: int = 4096) -> torch.Tensor:
        """Shared-space embeddings, L2-normalised, for encoder latents (in batches)."""
        self.encoder(modality)
        was = self.training
        self.eval()
        out = []
        for i in range(0, len(latents), batch_size):
            part = latents[i:i + batch_size].to(self.device)
            if isinstance(part, torch.Tensor) and part.dtype == torch.float16:
                part = part.float()  # latents stored fp16 (data.latent_dtype); heads are fp32
            out.append(F.normalize(self.forward_head(modality, part).float(), dim=-1))
        self.train(was)
        return torch.cat(out) if out else torch.empty(0, self.embed_dim)

    def embed(self, modality: str, values: list, batch_size: int = 32, progress: bool = False,
              cache_dir=None) -> torch.Tensor:
        """L2-normalised embeddings [N, embed_dim] for raw inputs (what the input kind reads) or manifest
        values (``cache_dir``: reuse the latent store there, see ``encode``)."""
        return self.project(modality, self.encode(modality, values, batch_size, progress, cache_dir=cache_dir))

    @property
    def towers(self) -> dict:
        """modality -> Tower: encoder + head (+ fusion) as one nn.Module giving normalised embeddings
        (shares this model's parameters; see fuse.model.embed.Tower)."""
        from fuse.model.embed import Tower

        return {m: Tower(self, m) for m in self.modalities}

    def similarity(self, a, b) -> torch.Tensor:
        """Cosine similarities [Na, Nb]; ``a``/``b`` are embeddings or (modality, inputs) pairs."""
        from fuse.model.embed import similarity

        return similarity(self, a, b)

    def index(self, source, modality: str | None = None, index_dir=None, rebuild: bool = False, cache_dir=None,
              batch_size: int = 32, index_kind: str = "auto"):
        """Build or update the on-disk index of ``source`` (a folder, glob or .jsonl manifest) and return it
        (a fuse.model.index.EmbeddingIndex); pass it to ``search`` to query it many times without reloading.
        ``index_kind``: exact, ivfpq, hnsw or auto (approximate indexes need the faiss extra)."""
        from fuse.model.index import IndexOptions
        from fuse.model.search import build_index

        options = IndexOptions(rebuild=rebuild, cache_dir=cache_dir, batch_size=batch_size, progress=False,
                               kind=index_kind)
        return build_index(self, source, modality, index_dir, options=options.for_model(self))

    def search(self, queries, index, k: int = 10, query_modality: str | None = None, modality: str | None = None,
               index_dir=None, rebuild: bool = False, cache_dir=None, batch_size: int = 32, index_kind: str = "auto",
               nprobe: int | None = None, ef_search: int | None = None,
               rerank: int | None = None) -> list[list[dict]]:
        """The ``k`` best items of ``index`` (a folder, glob or .jsonl manifest, indexed once and kept up to date
        on disk; or a built EmbeddingIndex) for each query: lists of {rank, score, value}, best first.
        ``index_kind``, ``nprobe``, ``ef_search``, ``rerank``: approximate search as in `fuse search`
        (docs/inference.md)."""
        from fuse.model.index import IndexOptions
        from fuse.model.search import search

        options = IndexOptions(rebuild=rebuild, cache_dir=cache_dir, batch_size=batch_size, progress=False,
                               kind=index_kind, nprobe=nprobe, ef_search=ef_search, rerank=rerank)
        return search(self, queries, index, k, query_modality=query_modality, modality=modality, index_dir=index_dir,
                      options=options)

    def with_untrained_heads(self, seed: int = 0) -> "AlignedModel":
        """The same encoders with freshly initialised heads: the 'before training' baseline."""
        torch.manual_seed(seed)
        heads, fusion = build_heads({m: s["head"] for m, s in self.specs.items()},
                                    {m: e.info for m, e in self.encoders.items()}, self.embed_dim, self.fusion_spec)
        return AlignedModel(dict(self.encoders), heads, self.embed_dim, self.specs, fusion,
                            self.fusion_spec).to(self.device)


def build_heads(heads: dict[str, Spec], infos: dict[str, EncoderInfo], embed_dim: int, fusion_spec: Spec | None):
    """Heads (and the fusion module): what training learns. A fusion sets the heads' output width."""
    fusion, head_out = None, embed_dim
    if fusion_spec is not None:
        fusion = fusion_spec.build(modalities=tuple(heads), out_dim=embed_dim)
        head_out = fusion.width
    built = {}
    for m, spec in heads.items():
        info = infos[m]
        if info.sequence is not None and not getattr(spec.cls, "takes_sequences", False):
            raise RecipeError(f"modalities.{m}.head: '{spec.name}' takes pooled latents [B, D], but the {m} encoder gives "
                              f"a sequence of {info.sequence} latents per item [B, {info.sequence}, {info.dim}]; use a "
                              "head that pools sequences (e.g. temporal)")
        built[m] = spec.build(in_dim=info.dim, out_dim=head_out)
    return built, fusion


def build_model(towers: dict, embed_dim: int, fusion: Spec | dict | None = None,
                encoders: dict | None = None) -> AlignedModel:
    """Build from {modality: (encoder Spec, head Spec)} or recipe-style {modality: {"encoder": {name, options},
    "head": {name, options}}}; ``encoders`` may hold towers built already."""
    towers = {m: t if isinstance(t, tuple) else
              (resolve_spec("encoder", t["encoder"]["name"], t["encoder"].get("options"), f"modalities.{m}.encoder"),
               resolve_spec("head", t.get("head", {"name": "residual-mlp"})["name"],
                            t.get("head", {}).get("options"), f"modalities.{m}.head"))
              for m, t in towers.items()}
    if isinstance(fusion, dict):
        fusion = resolve_spec("fusion", fusion["name"], fusion.get("options"), "fusion")
    encoders = dict(encoders or {})
    for m, (enc_spec, _) in towers.items():
        if m not in encoders:
            encoders[m] = enc_spec.build()
        enc = encoders[m]
        enc.info = dataclasses.replace(enc.info, modality=m)  # the recipe's name for this tower
    specs = {m: {"encoder": e, "head": h} for m, (e, h) in towers.items()}
    heads, fusion_module = build_heads({m: h for m, (_, h) in towers.items()},
                                       {m: encoders[m].info for m in towers}, embed_dim, fusion)
    return AlignedModel({m: encoders[m] for m in towers}, heads, embed_dim, specs, fusion_module, fusion)


