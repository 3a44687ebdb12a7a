"""Weight files: written as safetensors; read as safetensors, or torch.load with weights_only=True.
Never pickle."""

from __future__ import annotations

from pathlib import Path

import torch

from .errors import ModelFileError


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A weights file's tensors (safetensors, or a torch file read with weights_only=True), unwrapped
    from a {"state_dict": ...} or {"model": ...} checkpoint; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"Could not read weights {path}: {exc}. The file is corrupt or not a state dict "
                             "(fuse reads safetensors, or torch files with weights_only=True).") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ModelFileError(f"{path} holds a {type(state).__name__}, not a state dict of tensors.")
    return state


def save_state_dict(module: torch.nn.Module, path: str | Path) -> None:
    """``module``'s state dict as a safetensors file, written atomically with normal permissions."""
    from .atomic import save_tensors

    save_tensors(module.state_dict(), path)
