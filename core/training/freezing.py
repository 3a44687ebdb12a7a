"""Partly unfrozen encoders: train only the parameters a recipe names.

The shared-encoder paper tunes some pretrained layers and keeps the rest as they are; open_clip
calls this locking all but the last groups. A recipe names the parameters by glob patterns over
the encoder's own parameter names (`encoder.trainable: ["model.encoder.layer.5.*"]`), which
works for every plugin without each one defining what a "layer" is.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from fuse.base.errors import RecipeError


def layer_prefixes(module: nn.Module, depth: int = 4, most: int = 12) -> list[str]:
    """Distinct leading parts of parameter names, to show a user what to match."""
    seen: dict[str, None] = {}
    for name, _ in module.named_parameters():
        seen.setdefault(".".join(name.split(".")[:depth]) + ".*", None)
    names = list(seen)
    return names if len(names) <= most else names[:most // 2] + ["..."] + names[-most // 2:]


def set_trainable(encoder: nn.Module, patterns: list[str], where: str) -> int:
    """Freeze every parameter of ``encoder`` except those matching a pattern; returns how many
    parameters (elements) stay trainable. A pattern that matches nothing is a recipe error."""
    names = [name for name, _ in encoder.named_parameters()]
    for pattern in patterns:
        if not any(fnmatchcase(n, pattern) for n in names):
            raise RecipeError(f"{where}: '{pattern}' matches no parameter of this encoder. Its parameters "
                              f"start with: {', '.join(layer_prefixes(encoder))}")
    count = 0
    for name, p in encoder.named_parameters():
        p.requires_grad_(any(fnmatchcase(name, pat) for pat in patterns))
        count += p.numel() if p.requires_grad else 0
    return count
