"""Loading and saving transformers models for encoder plugins, with offline-friendly errors."""

from __future__ import annotations

from pathlib import Path

from .errors import ModelFileError
from .paths import is_local, resolve_path


def hf_source(model: str) -> str:
    """A local directory (resolving pkg: and ~) or the hub id unchanged."""
    return str(resolve_path(model)) if is_local(model) else model


def load_hf(auto_cls, source: str, revision: str | None = None, **kwargs):
    """auto_cls.from_pretrained with one clear error when the hub is unreachable or files are bad."""
    try:
        return auto_cls.from_pretrained(source, revision=revision, **kwargs)
    except OSError as exc:
        hint = ("It is not a local directory, and the hub could not be reached (offline?) or has no such "
                "model. Give a local directory, or run once online to fill the HF cache."
                if not Path(source).exists() else "The directory is incomplete or corrupt.")
        raise ModelFileError(f"Could not load '{source}' with {auto_cls.__name__}: {str(exc).splitlines()[0]} {hint}") from None


def save_hf(directory: Path, model, *processors) -> None:
    """Write a self-contained HF directory: config, safetensors weights and processors."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    for proc in processors:
        proc.save_pretrained(str(directory))
