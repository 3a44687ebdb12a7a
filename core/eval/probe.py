"""Linear probes: how much label information a tower's features carry, measured the usual way.

A multinomial logistic regression (softmax cross-entropy + L2 on the weights, bias unpenalised)
is fitted full-batch with L-BFGS in float64 on standardised features, so it solves the same
problem as scikit-learn's ``LogisticRegression(C=...)`` (``sum_i CE_i + ||W||^2 / (2C)``) without
needing scikit-learn at run time. C is chosen on a held-out part of the training set, then the
probe is refitted on all of it. ``run_probe`` compares three feature sets of one tower: the raw
encoder latents, the trained tower (shared-space embeddings) and the same encoder with untrained
heads, on the same split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from fuse.base.errors import DataError, FuseError
from fuse.base.inputs import input_kind
from fuse.base.latents import Tokens, masked_mean
from fuse.eval.run import read_classification_manifest

C_GRID = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass
class LinearProbe:
    """A fitted probe: standardisation (mean, std) then logits = x @ weight + bias."""

    weight: torch.Tensor   # [D, K]
    bias: torch.Tensor     # [K]
    mean: torch.Tensor     # [D]
    std: torch.Tensor      # [D]
    C: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(1)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, C: float, max_iter: int = 300,
                 tol: float = 1e-6, init: tuple[torch.Tensor, torch.Tensor] | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [D, K], bias [K]) minimising mean_i CE_i + ||W||^2 / (2 C n): the minimiser of
    scikit-learn's ``C * sum_i CE_i + ||W||^2 / 2``, scaled so the loss stays O(1). ``init`` warm-starts
    from another solution (the problem is strictly convex in W, so only the iterations change)."""
    x, y = x.double(), y.long()
    n, d = x.shape
    w0, b0 = init if init is not None else (torch.zeros(d, n_classes), torch.zeros(n_classes))
    weight = w0.detach().double().clone().requires_grad_(True)
    bias = b0.detach().double().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + (weight * weight).sum() / (2 * C * n)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return weight.detach(), bias.detach()


def _standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    return x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, Cs=C_GRID, val_fraction: float = 0.2,
              seed: int = 0) -> tuple[LinearProbe, dict[float, float]]:
    """Choose C on a random held-out ``val_fraction`` of (x, y) by top-1 accuracy (ties: the smaller C,
    i.e. more regularisation), refit on all of (x, y). Returns the probe and {C: held-out accuracy}."""
    n = len(x)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 2:
        raise DataError(f"The probe needs at least 3 training items to hold some out for choosing C; got {n}.")
    val, fit = perm[:n_val], perm[n_val:]
    mean, std = _standardiser(x[fit])
    scores, solutions, init = {}, {}, None
    for C in sorted(float(c) for c in Cs):  # weakest C first, each fit warm-started from the last one
        init = solutions[C] = fit_logistic((x[fit].double() - mean) / std, y[fit], n_classes, C, init=init)
        pred = (((x[val].double() - mean) / std) @ init[0] + init[1]).argmax(1)
        scores[C] = float((pred == y[val]).double().mean() * 100)
    best = max(scores.values())
    C = min(c for c, s in scores.items() if s == best)
    mean, std = _standardiser(x)
    w, b = fit_logistic((x.double() - mean) / std, y, n_classes, C, init=solutions[C])
    return LinearProbe(w, b, mean, std, C), scores


def probe_metrics(probe: LinearProbe, x: torch.Tensor, y: torch.Tensor, classes: list[str]) -> dict:
    """top-1 accuracy, mean per-class top-1 and per-class top-1 (percent) of ``probe`` on (x, y)."""
    hit = (probe.predict(x) == y).double()
    per_class = {classes[c]: float(hit[y == c].mean() * 100) for c in range(len(classes)) if (y == c).any()}
    return {"top1": float(hit.mean() * 100), "mean_class_top1": sum(per_class.values()) / len(per_class),
            "C": probe.C, "per_class_top1": per_class}


def split_by_key(keys: list[str], test_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Train / test indices with every item of one key on the same side: keys are shuffled (seeded)
    and whole keys go to test until it holds ``test_fraction`` of the items."""
    if not 0 < test_fraction < 1:
        raise DataError(f"--test-fraction must be between 0 and 1 (exclusive), got {test_fraction}.")
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    if len(groups) < 2:
        raise DataError(f"Cannot split {len(keys)} items by a key with {len(groups)} distinct value(s); "
                        "give a --split-key with more values, or --test.")
    order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
    names = list(groups)
    test: list[int] = []
    for g in order[:-1]:  # the last group always stays in train
        if len(test) >= test_fraction * len(keys):
            break
        test += groups[names[g]]
    test_set = set(test)
    return [i for i in range(len(keys)) if i not in test_set], sorted(test)


def _pooled(latents) -> torch.Tensor:
    """Raw encoder features [N, D]: pooled latents as they are; token latents mean-pooled over the mask."""
    return masked_mean(latents.values.float(), latents.mask) if isinstance(latents, Tokens) else latents.float()


def _pick_modality(model, modality: str | None) -> str:
    if modality is not None:
        if modality not in model.modalities:
            raise FuseError(f"--modality '{modality}': this model has towers {', '.join(model.modalities)}.")
        return modality
    if len(model.modalities) != 1:
        raise FuseError(f"This model has towers {', '.join(model.modalities)}; say which one to probe, e.g. "
                        f"--modality {model.modalities[0]}")
    return model.modalities[0]


def probe_latents(model, modality: str, lat_train, y_train: torch.Tensor, lat_test, y_test: torch.Tensor,
                  classes: list[str], Cs=C_GRID, val_fraction: float = 0.2, seed: int = 0,
                  baselines: bool = True) -> dict[str, dict]:
    """The probe of each feature set from encoder latents already computed ({feature set: metrics})."""
    features = {"raw latents": (_pooled(lat_train), _pooled(lat_test)),
                "model": (model.project(modality, lat_train), model.project(modality, lat_test))}
    if baselines:
        untrained = model.with_untrained_heads(seed=0)
        features["untrained heads"] = (untrained.project(modality, lat_train), untrained.project(modality, lat_test))
    results = {}
    for name, (x_train, x_test) in features.items():
        probe, scores = fit_probe(x_train.cpu(), y_train, len(classes), Cs, val_fraction, seed)
        results[name] = {**probe_metrics(probe, x_test.cpu(), y_test, classes), "val_top1_by_C": scores,
                         "dim": x_train.shape[1]}
    return results


def run_probe(model, train: str | Path, test: str | Path | None = None, test_fraction: float | None = None,
              split_key: str | None = None, modality: str | None = None, label_field: str = "label",
              Cs=C_GRID, val_fraction: float = 0.2, seed: int = 0, batch_size: int = 32, baselines: bool = True,
              progress: bool = False) -> dict:
    """Linear probe of one tower: fit on ``train`` (C chosen on its held-out ``val_fraction``), score on
    ``test``, or on a ``test_fraction`` of ``train`` split by the record field ``split_key`` (default:
    each record on its own). ``modality`` names the tower (needed when the model has more than one).
    Feature sets: "raw latents", "model" (the trained tower's embeddings) and, with ``baselines``,
    "untrained heads"."""
    if (test is None) == (test_fraction is None):
        raise FuseError("Give either a test manifest (--test) or --test-fraction to split --train, not both or neither.")
    modality = _pick_modality(model, modality)
    files = input_kind(model.input_kind(modality)).files
    values, labels = read_classification_manifest(train, modality, label_field, files)
    if test is not None:
        test_values, test_labels = read_classification_manifest(test, modality, label_field, files)
        train_idx = list(range(len(values)))
        split = {"test": str(test)}
    else:
        keys = (read_classification_manifest(train, modality, split_key, files)[1] if split_key
                else [str(i) for i in range(len(values))])
        train_idx, test_idx = split_by_key(keys, test_fraction, seed)
        test_values, test_labels = [values[i] for i in test_idx], [labels[i] for i in test_idx]
        split = {"test_fraction": test_fraction, "split_key": split_key or "(each record)"}
    values, labels = [values[i] for i in train_idx], [labels[i] for i in train_idx]
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"{train}: the training part has {len(classes)} class(es) in '{label_field}'; a probe needs 2+.")
    unseen = sorted(set(test_labels) - set(classes))
    if unseen:
        raise DataError(f"{test or train}: {len(unseen)} test label(s) never occur in the training part, "
                        f"e.g. {unseen[:5]}; the probe cannot predict them. Split by another key or add them to train.")
    index = {c: i for i, c in enumerate(classes)}
    y_train = torch.tensor([index[l] for l in labels])
    y_test = torch.tensor([index[l] for l in test_labels])
    lat_train = model.encode(modality, values, batch_size, progress)
    lat_test = model.encode(modality, test_values, batch_size, progress)
    results = probe_latents(model, modality, lat_train, y_train, lat_test, y_test, classes, Cs, val_fraction, seed,
                            baselines)
    return {"task": "probe", "train": str(train), **split, "modality": modality, "label_field": label_field,
            "classes": len(classes), "train_items": len(values), "test_items": len(test_values), "metrics": results}
