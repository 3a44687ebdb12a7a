"""Evaluate an aligned model on a manifest: retrieval or zero-shot, with baselines.

The baselines show what training bought: the same encoders with *untrained* heads, and, when
both towers' latents have the same size, the raw encoder latents compared directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fuse.base.errors import DataError, FuseError
from fuse.base.inputs import input_kind
from fuse.data.manifest import jsonl_records, load_pairs
from fuse.data.screening import drop_bad_media
from fuse.eval.retrieval import evaluate_retrieval, ranks_of_best_positive
from fuse.eval.zeroshot import (class_embeddings_from, confusion_matrix, load_templates, metrics_from_ranks,
                               prompt_texts, top_classes, true_class_ranks, zeroshot_metrics)


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


@dataclass
class ZeroshotInputs:
    """What every zero-shot variant shares: the items, their true class indices, the class list and the
    encoder latents of the items and of the prompts (encoders are shared; only the heads differ)."""

    values: list[str]
    target: torch.Tensor
    classes: list[str]
    names: list[str]
    n_templates: int
    query_modality: str
    text_modality: str
    files: bool
    latents: object
    prompt_latents: object

    def embeddings(self, variant) -> tuple[torch.Tensor, torch.Tensor]:
        """(query embeddings [N, D], class embeddings [C, D]) through ``variant``'s heads."""
        prompts = variant.project(self.text_modality, self.prompt_latents)
        cls = class_embeddings_from(prompts, len(self.names), self.n_templates)
        return variant.project(self.query_modality, self.latents), cls


def zeroshot_inputs(model, manifest: str | Path, classes: list[str] | None = None, label_field: str = "label",
                    templates: str = "imagenet", query_modality: str | None = None, text_modality: str | None = None,
                    batch_size: int = 32, progress: bool = False, class_names: list[str] | None = None,
                    cache_dir: str | Path | None = None) -> ZeroshotInputs:
    """Read a labelled manifest, check it against the class list and encode items and prompts once."""
    text_modality = text_modality or next((m for m in model.modalities if model.input_kind(m) == "text"), None)
    if text_modality is None:
        raise FuseError(f"Zero-shot classification needs a text tower; this model aligns "
                        f"{' and '.join(model.modalities)}. Use --task retrieval.")
    others = [m for m in model.modalities if m != text_modality]
    query_modality = query_modality or others[0]
    if query_modality not in others:
        raise FuseError(f"--modality '{query_modality}' is not a non-text tower of this model ({', '.join(others)}).")
    files = input_kind(model.input_kind(query_modality)).files
    values, labels = read_classification_manifest(manifest, query_modality, label_field, files)
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
    # The prompts' text latents are encoded once (through the latent store with cache_dir).
    return ZeroshotInputs(
        values, torch.tensor([index[l] for l in labels]), classes, names, len(prompts), query_modality,
        text_modality, files, model.encode(query_modality, values, batch_size, progress, cache_dir=cache_dir),
        model.encode(text_modality, prompt_texts(names, prompts), batch_size, progress, cache_dir=cache_dir))


def run_zeroshot(model, manifest: str | Path, classes: list[str] | None = None, label_field: str = "label",
                 templates: str = "imagenet", query_modality: str | None = None, text_modality: str | None = None,
                 ks=(1, 5), chunk_size: int = 4096, batch_size: int = 32, baselines: bool = True,
                 progress: bool = False, class_names: list[str] | None = None,
                 cache_dir: str | Path | None = None) -> dict:
    """Classify each item of ``query_modality`` among ``classes`` by prompts in the text tower.

    ``classes`` are the labels records hold; ``class_names`` (default: the labels) are what the prompts
    say, so two classes may share a name (ImageNet's curated list does) and keep distinct labels.
    ``cache_dir`` reads (and adds to) the latent store there, like retrieval."""
    given = zeroshot_inputs(model, manifest, classes, label_field, templates, query_modality, text_modality,
                            batch_size, progress, class_names, cache_dir)
    variants = {"model": model}
    if baselines:
        variants["untrained heads"] = model.with_untrained_heads(seed=0)
    results = {}
    for name, variant in variants.items():
        query, cls = given.embeddings(variant)
        results[name] = zeroshot_metrics(query, cls, given.target, given.classes, ks, chunk_size)
    return {"task": "zeroshot", "manifest": str(manifest), "classes": len(given.classes),
            "templates": given.n_templates, "queries": len(given.values), "query_modality": given.query_modality,
            "metrics": results}


def zeroshot_predictions(model, manifest: str | Path, k: int = 5, chunk_size: int = 4096, **options) -> dict:
    """Each item's top-``k`` classes (best first, retrieval's tie rule), its true class's rank, the confusion matrix of the
    top-1 prediction (rows: true class, columns: predicted) and the model's zero-shot metrics.
    ``options`` are ``zeroshot_inputs``'s (classes, label_field, templates, query_modality, ...)."""
    given = zeroshot_inputs(model, manifest, **options)
    query, cls = given.embeddings(model)
    k = min(k, len(given.classes))
    top = top_classes(query, cls, k, chunk_size).cpu()
    ranks = true_class_ranks(query, cls, given.target, chunk_size).cpu()
    return {"inputs": given, "top": top, "ranks": ranks,
            "confusion": confusion_matrix(given.target, top[:, 0], len(given.classes)),
            "metrics": metrics_from_ranks(ranks, given.target, given.classes, sorted({1, k}))}


__all__ = ["ZeroshotInputs", "run_retrieval", "run_zeroshot", "true_class_ranks", "zeroshot_inputs",
           "zeroshot_predictions"]
