"""Resolve the recipe's `device`: `auto` means CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from .errors import RecipeError


def resolve_device(name: str) -> torch.device:
    """The torch device a recipe's `device` names; `auto` is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RecipeError(f"device: '{name}' was asked for but CUDA is not available here; use device=auto or cpu.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise RecipeError(f"device: '{name}' is not a device; use auto, cpu, cuda or cuda:N.") from None
