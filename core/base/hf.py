"""Loading and saving transformers models for encoder plugins, with offline-friendly errors."""

from __future__ import annotations

from pathlib import Path

from fuse.base.errors import ModelFileError, RecipeError
from fuse.base.paths import is_local, resolve_path


def hf_source(model: str) -> str:
    """A local directory (resolving pkg: and ~) or the hub id unchanged."""
    return str(resolve_path(model)) if is_local(model) else model


def set_dropout(config, p: float) -> None:
    """Every dropout probability in a transformers config (sub-configs too: CLIP's vision_config) to p.

    Names differ by architecture (BERT's hidden_dropout_prob, DistilBERT's attention_dropout, T5's
    dropout_rate), so every numeric field named *dropout* is set. With p == 0 the other random
    layers, stochastic depth (drop_path_rate) and layerdrop, are turned off too: a tower with
    dropout 0 computes the same function in train and eval mode, which is what makes a chunked
    (GradCache) or multi-rank step equal the plain single-process one.
    """
    from transformers import PretrainedConfig

    for name, value in list(vars(config).items()):
        if isinstance(value, PretrainedConfig):
            set_dropout(value, p)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if "dropout" in name or (p == 0 and name in ("drop_path_rate", "layerdrop")):
                setattr(config, name, float(p))


def load_hf(auto_cls, source: str, revision: str | None = None, dropout: float | None = None, **kwargs):
    """auto_cls.from_pretrained with one clear error when the hub is unreachable or files are bad.

    dropout (not None) overrides the checkpoint's dropout probabilities (set_dropout)."""
    if dropout is not None:
        from transformers import AutoConfig

        config = load_hf(AutoConfig, source, revision)
        set_dropout(config, dropout)
        if auto_cls is AutoConfig:
            return config
        kwargs["config"] = config
    local = Path(source)
    if local.is_dir() and not list(local.glob("*.safetensors")) and \
            [p.name for p in local.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]:
        raise ModelFileError(
            f"{local} holds only pickle weights ({', '.join(p.name for p in local.glob('*.bin'))or 'a .pt file'}), "
            "which fuse never loads (a pickle can run code). Convert it once, where you trust the file: "
            f"python -c \"from transformers import AutoModel; AutoModel.from_pretrained('{local}')"
            f".save_pretrained('{local}', safe_serialization=True)\"")
    try:
        return auto_cls.from_pretrained(source, revision=revision, **kwargs)
    except OSError as exc:
        hint = ("It is not a local directory, and the hub could not be reached (offline?) or has no such "
                "model. Give a local directory, or run once online to fill the HF cache."
                if not Path(source).exists() else "The directory is incomplete or corrupt.")
        raise ModelFileError(f"Could not load '{source}' with {auto_cls.__name__}: {str(exc).splitlines()[0]} {hint}") from None


def truncate_layers(model, num_layers: int | None) -> None:
    """Keep only the first ``num_layers`` transformer layers (the shared-encoder recipes use
    the lower half of each pretrained encoder)."""
    if num_layers is None:
        return
    import torch.nn as nn

    encoder = getattr(model, "encoder", None)
    for name in ("layer", "layers"):
        layers = getattr(encoder, name, None)
        if isinstance(layers, nn.ModuleList):
            if not 0 < num_layers <= len(layers):
                raise RecipeError(f"num_layers: {num_layers} is outside 1..{len(layers)} for this model.")
            setattr(encoder, name, layers[:num_layers])
            model.config.num_hidden_layers = num_layers
            return
    raise RecipeError(f"num_layers: cannot find the transformer layers of {type(model).__name__}.")


def save_hf(directory: Path, model, *processors) -> None:
    """Write a self-contained HF directory: config, safetensors weights and processors."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    for proc in processors:
        proc.save_pretrained(str(directory))


def enable_checkpointing(model, name: str) -> None:
    """transformers' gradient checkpointing, non-reentrant (the RNG state is replayed, so dropout
    masks match, and layers whose inputs need no gradient still train); a model without support is
    a recipe error naming it."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise RecipeError(f"gradient_checkpointing: {name} ({type(model).__name__}) does not support "
                          "gradient checkpointing in transformers; remove the option.")
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x renamed it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
