"""Zero-shot scoring of multi-label items (AudioSet- and VGGSound-style manifests whose label is a list): mean
average precision over classes, as clip_benchmark scores VOC2007's multi-label set. Keeping each item's first
label and scoring top-1 would call a correct second label a miss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """AP of one class: the mean, over its positives, of the precision among the items scored at least as high
    (ties broken by item order), in percent."""
    order = torch.sort(scores, descending=True, stable=True).indices
    hits = positive[order].double()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.double)
    return float((precision * hits).sum() / hits.sum() * 100)


@torch.no_grad()
def multilabel_metrics(query: torch.Tensor, classes: torch.Tensor, target: torch.Tensor,
                       class_names: list[str]) -> dict:
    """mAP over the classes that have a positive item, per-class AP, and top-1 (the best class is one of the
    item's labels). ``target`` is the [N, C] 0/1 matrix of each item's labels."""
    scores = F.normalize(query.float(), dim=-1) @ classes.to(query.device).float().T
    target = target.to(scores.device).bool()
    per_class = {name: average_precision(scores[:, c].cpu(), target[:, c].cpu())
                 for c, name in enumerate(class_names) if target[:, c].any()}
    top1 = target.gather(1, scores.argmax(1, keepdim=True)).double().mean() * 100
    return {"mAP": sum(per_class.values()) / max(1, len(per_class)), "top1": float(top1),
            "per_class_ap": per_class}


def multi_hot(labels: list[list[str]], index: dict[str, int]) -> torch.Tensor:
    """[N, C] float matrix with 1 where item n has class c."""
    target = torch.zeros(len(labels), len(index))
    for n, item in enumerate(labels):
        target[n, [index[label] for label in item]] = 1
    return target
