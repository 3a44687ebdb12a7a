"""Zero-shot classification: class names + prompt templates -> class embeddings -> accuracy.

As in CLIP: every prompt of a class is embedded and L2-normalised, the prompts are averaged
and the mean is normalised again. Accuracy uses each query's rank of its true class with
deterministic ties (a class with an equal score and a lower index ranks first), computed in
query chunks so memory stays at one [chunk, classes] block.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from fuse.base.errors import DataError

BUILTIN_TEMPLATES = ("imagenet", "short", "sound")


def load_templates(name: str) -> list[str]:
    """'imagenet' (CLIP's 80), 'short' (5), 'sound' (8, for audio classes such as ESC-50), or a text file with
    one template per line using {}."""
    if name in BUILTIN_TEMPLATES:
        text = resources.files("fuse").joinpath("templates", f"{name}.txt").read_text()
        where = f"built-in templates '{name}'"
    else:
        path = Path(name)
        if not path.exists():
            raise DataError(f"Templates '{name}' not found: give {' or '.join(BUILTIN_TEMPLATES)} or a file path.")
        text, where = path.read_text(), str(path)
    templates = [t for t in (line.strip() for line in text.splitlines()) if t]
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise DataError(f"{where}: every line must be a template containing '{{}}' for the class name"
                        + (f"; not: {bad[:3]}" if bad else "; the file is empty"))
    return templates


def prompt_texts(classes: list[str], templates: list[str]) -> list[str]:
    """Every template filled with every class name, class-major (class 0's prompts first)."""
    return [t.replace("{}", c) for c in classes for t in templates]


def class_embeddings_from(emb: torch.Tensor, n_classes: int, n_templates: int) -> torch.Tensor:
    """[C, D] class embeddings from the [C * T, D] embeddings of ``prompt_texts``: each prompt normalised,
    averaged per class, normalised again."""
    emb = F.normalize(emb.float(), dim=-1).view(n_classes, n_templates, -1).mean(1)
    return F.normalize(emb, dim=-1)


def class_embeddings(embed_text, classes: list[str], templates: list[str], batch_size: int = 256) -> torch.Tensor:
    """[C, D] class embeddings; ``embed_text(list[str]) -> [N, D]`` normalised text embeddings."""
    if not classes:
        raise DataError("The class list is empty: give at least one class name.")
    prompts = prompt_texts(classes, templates)
    emb = torch.cat([embed_text(prompts[i:i + batch_size]) for i in range(0, len(prompts), batch_size)])
    return class_embeddings_from(emb, len(classes), len(templates))


def read_class_list(path: str | Path, option: str = "--classes") -> list[str]:
    """Class labels from a text file, one per line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{option} file not found: {path}")
    names = [c.strip() for c in path.read_text().splitlines() if c.strip()]
    if not names:
        raise DataError(f"{option} {path}: the file holds no class names; give one per line.")
    return names


def _scored_chunks(query: torch.Tensor, classes: torch.Tensor, chunk_size: int):
    """(start, [chunk, C] scores) in query chunks. Identical class embeddings (duplicate names) must tie
    exactly, but a BLAS matmul may round two equal columns differently: score each distinct row once."""
    query, classes = query.float(), classes.to(query.device).float()
    distinct, copy_of = torch.unique(classes, dim=0, return_inverse=True)
    for start in range(0, query.shape[0], chunk_size):
        yield start, (query[start:start + chunk_size] @ distinct.T)[:, copy_of]


@torch.no_grad()
def true_class_ranks(query: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor,
                     chunk_size: int = 4096) -> torch.Tensor:
    """1-based rank of each query's true class among all classes, on the query's device. The tie
    rule is retrieval's (fuse.eval.rank): a class with an equal score and a lower index ranks first."""
    device = query.device
    labels = labels.to(device).long()
    idx = torch.arange(classes.shape[0], device=device)
    ranks = []
    for start, sims in _scored_chunks(query, classes, chunk_size):
        lab = labels[start:start + sims.shape[0]]
        true = sims.gather(1, lab[:, None])
        ahead = (sims > true).sum(1) + ((sims == true) & (idx[None, :] < lab[:, None])).sum(1)
        ranks.append(ahead + 1)
    return torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.long, device=device)


@torch.no_grad()
def top_classes(query: torch.Tensor, classes: torch.Tensor, k: int = 5, chunk_size: int = 4096) -> torch.Tensor:
    """[N, k] indices of each query's k best classes, best first, with ``true_class_ranks``'s tie rule
    (a stable sort keeps the lower index first among equal scores), so column 0 is the true class
    exactly where its rank is 1."""
    tops = [torch.sort(sims, dim=1, descending=True, stable=True).indices[:, :k]
            for _, sims in _scored_chunks(query, classes, chunk_size)]
    return torch.cat(tops) if tops else torch.empty(0, k, dtype=torch.long, device=query.device)


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[C, C] counts: row = true class, column = predicted class."""
    flat = labels.long().cpu() * n_classes + predicted.long().cpu()
    return torch.bincount(flat, minlength=n_classes * n_classes).view(n_classes, n_classes)


def zeroshot_metrics(query: torch.Tensor, classes: torch.Tensor, labels: torch.Tensor, class_names: list[str],
                     ks=(1, 5), chunk_size: int = 4096) -> dict:
    """top-K accuracy (percent), mean per-class accuracy and per-class top-1 accuracy."""
    return metrics_from_ranks(true_class_ranks(query, classes, labels, chunk_size), labels, class_names, ks)


def metrics_from_ranks(ranks: torch.Tensor, labels: torch.Tensor, class_names: list[str], ks=(1, 5)) -> dict:
    """``zeroshot_metrics`` from ranks already computed (``true_class_ranks``)."""
    out: dict = {f"top{k}": float((ranks <= k).double().mean() * 100) for k in ks}
    per_class = {}
    for c, name in enumerate(class_names):
        hit = ranks[labels.to(ranks.device) == c]
        if hit.numel():
            per_class[name] = float((hit == 1).double().mean() * 100)
    out["mean_per_class_top1"] = sum(per_class.values()) / max(1, len(per_class))
    out["per_class_top1"] = per_class
    return out
