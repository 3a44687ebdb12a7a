"""Where a frozen tower's latents live while training: a tensor on the device, or the latent
store's memory-mapped table whose rows each batch gathers (``data.latents_on_device``)."""

from __future__ import annotations

from pathlib import Path

import torch

from fuse.base.errors import DataError, RecipeError
from fuse.data.cache import EncodeOptions, cached_latents, encode_values
from fuse.data.store import LatentTable
from fuse.recipes.recipe import Recipe
from fuse.training.step import StepModule


def frozen_latents(encoder, spec: dict, values: list[str], recipe: Recipe, cache_dir: Path, device: torch.device,
                   label: str, room: list[int], tokens: bool = False):
    """A frozen encoder's latents of ``values``: a tensor on the device, or (when they do not fit in
    ``room``, the device bytes left for latents, or data.latents_on_device is false) the latent
    store's memory-mapped LatentTable, whose rows the batch stream gathers per step."""
    setting = recipe.data.latents_on_device
    if recipe.data.cache_latents:
        table = cached_latents(encoder, spec, values, cache_dir, device,
                               EncodeOptions(recipe.data.encode_batch_size, recipe.data.num_workers, label, tokens=tokens,
                                             dtype=recipe.data.latent_dtype, shard_rows=recipe.data.shard_rows,
                                             mapped=True))
        if setting is False or (setting == "auto" and table.nbytes > room[0]):
            print(f"{label}: {table.nbytes / 2**30:.2f} GiB of latents stay memory-mapped, gathered per step "
                  f"(data.latents_on_device: {str(setting).lower()})")
            return table
        room[0] -= table.nbytes
        return table.materialize().to(device)
    if setting is False:
        raise RecipeError("data.latents_on_device: false reads latents from the latent store's mapped shards, "
                          "which data.cache_latents: false turns off; set one of them otherwise.")
    out = encode_values(encoder, values, device, recipe.data.encode_batch_size, recipe.data.num_workers,
                        desc=f"encoding {label}", tokens=tokens)
    if not torch.isfinite(out.values if tokens else out).all():
        raise DataError(f"{label}: the frozen encoder gave NaN/Inf latents for some inputs; check the data "
                        "and the encoder (a fp16 encoder can overflow: try its fp32 option).")
    if recipe.data.latent_dtype == "float16" and not tokens:
        out = out.half()
    return out.to(device)


def mapped_tables(step_module: StepModule, pair: tuple[str, str]) -> dict:
    """The pair's tables that stay memory-mapped, for its batch stream to gather ahead of the step."""
    out = {("latents", m): (step_module.latents[m], col) for col, m in enumerate(pair)
           if isinstance(step_module.latents.get(m), LatentTable)}
    out.update({("extras", n): (t, pair.index(m)) for n, m in step_module.extra_modalities.items()
                if m in pair and isinstance(t := step_module.extras.get(n), LatentTable)})
    return out
