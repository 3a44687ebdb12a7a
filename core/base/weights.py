"""Weight files: written as safetensors; read as safetensors, or torch.load with weights_only=True.
Never pickle."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from fuse.base.atomic import save_tensors
from fuse.base.errors import ModelFileError


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
    save_tensors(module.state_dict(), path)


# ---------------------------------------------------------------- hashed weight files (checkpoints, exports)

HASH_KEY = "fuse_sha256"


def tensors_hash(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of the tensors, in name order."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """A ``trainable_state`` as safetensors with its content hash, written atomically."""
    save_tensors(state, path, metadata={HASH_KEY: tensors_hash(state)})


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors, its content hash verified (files without one, from older fuse, are read as they are)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            expected = (f.metadata() or {}).get(HASH_KEY)
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ModelFileError(f"Checkpoint {path} is unreadable ({str(exc).splitlines()[0]}); it is truncated or "
                             "corrupt. Use another one (export --checkpoint epoch-NNN) or retrain.") from None
    if expected is not None and tensors_hash(state) != expected:
        raise ModelFileError(f"Checkpoint {path} does not match its recorded content hash: the file is corrupt. "
                             "Use another one (export --checkpoint epoch-NNN) or retrain.")
    return state
