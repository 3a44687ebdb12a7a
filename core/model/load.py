"""Loading aligned models: an export folder (or a run's export) rebuilt through the plugin registry, and
the model a plan trains (its new towers plus a base model's).

Nothing here unpickles: encoders rebuild from their registered names and options, heads and fusion
load from safetensors, and every file is checked against the export's recorded hashes first.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from fuse.base.errors import ModelFileError, RecipeError
from fuse.model.aligned import AlignedModel, build_model
from fuse.model.export_files import verify_files
from fuse.recipes.export_format import CONFIG, read_config, tower_specs
from fuse.recipes.spec import resolve_spec


def load_aligned(path: str | Path, device: str = "cpu") -> AlignedModel:
    """Rebuild an exported model (or the export inside a run dir) with no network access."""
    given = path
    path, config = read_config(path)
    verify_files(path, config.get("files") or {})
    towers = tower_specs(path, config)
    fusion = config.get("fusion")
    fusion_spec = resolve_spec("fusion", fusion["name"], fusion.get("options"), f"{path / CONFIG}:fusion") if fusion else None
    model = build_model(towers, config["embed_dim"], fusion_spec)
    for m, tower in config["modalities"].items():
        if model.encoders[m].info.dim != tower["head"]["in_dim"]:
            raise ModelFileError(f"{path / m / 'encoder'}: the {m} encoder gives {model.encoders[m].info.dim}-d latents "
                                 f"but its head was trained on {tower['head']['in_dim']}-d ones; the export is inconsistent.")
    weights = [(model.heads[m], path / m / "head.safetensors") for m in model.heads]
    if model.fusion is not None:
        weights.append((model.fusion, path / "fusion.safetensors"))
    listed = config.get("files") or {}
    for module, file in weights:
        if listed and file.relative_to(path).as_posix() not in listed:
            raise ModelFileError(f"{file} is not in {path / CONFIG}'s files list, so it is not loaded; re-export the "
                                 "model.")
        try:
            module.load_state_dict(load_file(str(file)))
        except Exception as exc:
            raise ModelFileError(f"Could not load {file}: {exc}") from None
    model.path = str(given)  # recorded in the indexes it builds, to name it in messages
    return model.to(torch.device(device)).eval()


def model_from_plan(plan) -> AlignedModel:
    """The model a plan trains: its new towers, plus a base model's towers (frozen heads) when it has one."""
    new = {m: (t.encoder, t.head) for m, t in plan.towers.items() if not t.base}
    model = build_model(new, plan.recipe.embed_dim, plan.fusion)
    if plan.base_model is None:
        return model
    base = load_aligned(plan.base_model)
    if base.embed_dim != plan.recipe.embed_dim:
        raise RecipeError(f"embed_dim: {plan.recipe.embed_dim}, but base_model {plan.base_model} embeds into "
                          f"{base.embed_dim} dimensions; set embed_dim: {base.embed_dim}")
    base.heads.requires_grad_(False)
    return AlignedModel({**base.encoders, **model.encoders}, {**base.heads, **model.heads}, model.embed_dim,
                        {**base.specs, **model.specs})
