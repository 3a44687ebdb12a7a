"""Evaluate an aligned model on a manifest: retrieval or zero-shot, with baselines.

The baselines show what training bought: the same encoders with *untrained* heads, and, when
both towers' latents have the same size, the raw encoder latents compared directly.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from fuse.api.errors import DataError, FuseError
from fuse.api.inputs import input_kind
from fuse.data.manifest import jsonl_records, load_pairs
from fuse.data.screening import drop_bad_media
from fuse.eval.retrieval import evaluate_retrieval, ranks_of_best_positive
from fuse.eval.zeroshot import (class_embeddings_from, load_templates, prompt_texts, true_class_ranks,
                               zeroshot_metrics)


def file_modalities(model, modalities):
    """The modalities among ``modalities`` whose values are files (relative to a manifest, checked on load)."""
    return tuple(m for m in modalities if input_kind(model.input_kind(m)).files)


def pick_pair(model, modalities: tuple[str, str] | None) -> tuple[str, str]:
    """The two towers to evaluate: the given ones (any two, trained together or not), or the model's only two."""
    if modalities is None:
        if len(model.modalities) != 2:
            raise FuseError(f"This model has {len(model.modalities)} towers ({', '.join(model.modalities)}); say which "
                            "two to evaluate, e.g. --modalities " + ",".join(model.modalities[:2]))
        return tuple(model.modalities)
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in model.modalities]
    if len(modalities) != 2 or modalities[0] == modalities[1] or unknown:
        raise FuseError(f"--modalities must name two different towers of the model ({', '.join(model.modalities)}), "
                        f"got {','.join(modalities)}")
    return modalities


def run_retrieval(model, manifest: str | Path, ks=(1, 5, 10), chunk_size: int = 4096, batch_size: int = 32,
                  baselines: bool = True, progress: bool = False, skip_bad_media: bool = False,
                  modalities: tuple[str, str] | None = None, cache_dir: str | Path | None = None) -> dict:
    """Recall@K both ways between two towers on a paired manifest. Returns {"metrics": {variant: {...}}, "curves": ...}.

    ``modalities`` picks the two towers (needed when the model has more); ``skip_bad_media`` leaves
    out pairs whose file is unreadable, empty or silent (and says so); ``cache_dir`` reads (and adds to)
    the latent store there, so values training encoded are not encoded again."""
    a, b = pick_pair(model, modalities)
    data = load_pairs(manifest, (a, b), file_modalities(model, (a, b)))
    if skip_bad_media:
        data = drop_bad_media(data, {m: model.input_kind(m) for m in (a, b)}, cache_dir=None)
    latents = {m: model.encode(m, data.values[m], batch_size, progress, cache_dir=cache_dir) for m in (a, b)}
    variants = {"model": model}
    if baselines:
        variants["untrained heads"] = model.with_untrained_heads(seed=0)
    results, curves = {}, {}
    for name, variant in variants.items():
        emb = {m: variant.project(m, latents[m]) for m in (a, b)}
        results[name] = evaluate_retrieval(emb[a], emb[b], data.pairs, (a, b), ks, chunk_size)
        curves[name] = _recall_curves(emb[a], emb[b], data.pairs, (a, b), chunk_size)
    if baselines and not model.uses_tokens and latents[a].ndim == latents[b].ndim == 2 \
            and latents[a].shape[1] == latents[b].shape[1]:
        raw = {m: F.normalize(latents[m].float(), dim=-1) for m in (a, b)}
        results["raw latents"] = evaluate_retrieval(raw[a], raw[b], data.pairs, (a, b), ks, chunk_size)
        curves["raw latents"] = _recall_curves(raw[a], raw[b], data.pairs, (a, b), chunk_size)
    return {"task": "retrieval", "manifest": str(manifest), "modalities": [a, b],
            "items": {m: len(data.values[m]) for m in (a, b)},
            "pairs": len(data), "metrics": results, "curves": curves}


def _recall_curves(emb_a, emb_b, pairs, names, chunk_size, max_k: int = 50) -> dict[str, list[float]]:
    a, b = names
    out = {}
    for key, q, c, pos in ((f"{a}_to_{b}", emb_a, emb_b, pairs), (f"{b}_to_{a}", emb_b, emb_a, pairs.flip(1))):
        ranks = ranks_of_best_positive(q, c, pos, chunk_size)
        ranks = ranks[ranks > 0]
        out[key] = [float((ranks <= k).double().mean() * 100) for k in range(1, max_k + 1)]
    return out


def read_classification_manifest(path: str | Path, modality: str, label_field: str, is_file: bool):
    """Values of ``modality`` and their labels from a JSONL manifest."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"Manifest not found: {path}")
    values, labels = [], []
    for n, record in jsonl_records(path):
        for field in (modality, label_field):
            if field not in record:
                raise DataError(f"{path}:{n}: record has no '{field}' field (fields: {', '.join(record)}).")
        label = record[label_field][0] if isinstance(record[label_field], list) else record[label_field]
        value = record[modality][0] if isinstance(record[modality], list) else record[modality]
        if is_file:
            value = str((path.parent / value).resolve())
            if not Path(value).is_file():
                raise DataError(f"{path}:{n}: {modality} file not found: {value}")
        values.append(value)
        labels.append(str(label))
    if not values:
        raise DataError(f"Manifest is empty: {path}")
    return values, labels


def run_zeroshot(model, manifest: str | Path, classes: list[str] | None = None, label_field: str = "label",
                 templates: str = "imagenet", query_modality: str | None = None, text_modality: str | None = None,
                 ks=(1, 5), chunk_size: int = 4096, batch_size: int = 32, baselines: bool = True,
                 progress: bool = False, class_names: list[str] | None = None,
                 cache_dir: str | Path | None = None) -> dict:
    """Classify each item of ``query_modality`` among ``classes`` by prompts in the text tower.

    ``classes`` are the labels records hold; ``class_names`` (default: the labels) are what the prompts
    say, so two classes may share a name (ImageNet's curated list does) and keep distinct labels.
    ``cache_dir`` reads (and adds to) the latent store there, like retrieval."""
    text_modality = text_modality or next((m for m in model.modalities if model.input_kind(m) == "text"), None)
    if text_modality is None:
        raise FuseError(f"Zero-shot classification needs a text tower; this model aligns "
                        f"{' and '.join(model.modalities)}. Use --task retrieval.")
    others = [m for m in model.modalities if m != text_modality]
    query_modality = query_modality or others[0]
    if query_modality not in others:
        raise FuseError(f"--modality '{query_modality}' is not a non-text tower of this model ({', '.join(others)}).")
    values, labels = read_classification_manifest(manifest, query_modality, label_field,
                                                  input_kind(model.input_kind(query_modality)).files)
    classes = list(classes) if classes is not None else sorted(set(labels))
    if not classes:
        raise DataError("The class list is empty: give at least one class name.")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise DataError(f"{manifest}: {len(unknown)} label(s) are not in the class list, e.g. {unknown[:5]}.")
    names = list(class_names) if class_names is not None else classes
    if len(names) != len(classes):
        raise DataError(f"{len(names)} class names for {len(classes)} classes; give one name per class.")
    prompts = load_templates(templates)
    target = torch.tensor([index[l] for l in labels])
    latents = model.encode(query_modality, values, batch_size, progress, cache_dir=cache_dir)
    variants = {"model": model}
    if baselines:
        variants["untrained heads"] = model.with_untrained_heads(seed=0)
    results = {}
    # The prompts' text latents are encoded once (through the latent store with cache_dir): every
    # variant shares the encoders, only the heads differ.
    prompt_latents = model.encode(text_modality, prompt_texts(names, prompts), batch_size, progress,
                                  cache_dir=cache_dir)
    for name, variant in variants.items():
        cls = class_embeddings_from(variant.project(text_modality, prompt_latents), len(names), len(prompts))
        results[name] = zeroshot_metrics(variant.project(query_modality, latents), cls, target, classes, ks, chunk_size)
    return {"task": "zeroshot", "manifest": str(manifest), "classes": len(classes), "templates": len(prompts),
            "queries": len(values), "query_modality": query_modality, "metrics": results}


__all__ = ["run_retrieval", "run_zeroshot", "true_class_ranks"]
