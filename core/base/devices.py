"""Resolve the recipe's `device`: `auto` means CUDA when present, else the CPU."""

from __future__ import annotations

import torch

from fuse.base.errors import RecipeError


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


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device`` now: CUDA's free memory, or the host's MemAvailable for the CPU."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
