"""LoRA adapters on encoders (recipe ``modalities.<m>.encoder.lora``), with the ``peft`` library.

peft injects low-rank adapters beside the chosen Linear/Conv/Embedding layers of any encoder
module (transformers or timm alike); only the adapters (and the heads) train, the base weights stay
as loaded and are left out of checkpoints. Before the export the adapters are merged into the base
weights and the wrappers removed, so an exported model is a plain encoder that loads without peft.
"""

from __future__ import annotations

import fnmatch
import importlib.util

from torch import nn

from fuse.base.errors import PluginError, RecipeError

WRAPPABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)  # the layer types peft's LoRA wraps


def apply_lora(encoder: nn.Module, lora, where: str) -> list[str]:
    """Inject adapters into the layers whose names match ``lora.target``; freeze everything else in
    ``encoder``. Returns the names of its now-frozen parameters (checkpoints skip them)."""
    if importlib.util.find_spec("peft") is None:
        raise PluginError(f"{where}: LoRA needs the 'peft' package, which is not installed; "
                          "pip install 'fuse-align[lora]', or remove lora from the recipe.")
    import peft

    names = [n for n, mod in encoder.named_modules()
             if n and isinstance(mod, WRAPPABLE) and any(fnmatch.fnmatch(n, g) for g in lora.target)]
    if not names:
        layers = [n for n, mod in encoder.named_modules() if n and isinstance(mod, WRAPPABLE)]
        hint = f"its wrappable layers look like {', '.join(layers[:4])}" if layers else \
            "it has no Linear, Conv1d/2d or Embedding layer peft can wrap"
        raise RecipeError(f"{where}.target: no layer matches {lora.target}; {hint}.")
    config = peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=names)
    peft.inject_adapter_in_model(config, encoder)
    for n, p in encoder.named_parameters():
        p.requires_grad_("lora_" in n)
    return [n for n, p in encoder.named_parameters() if not p.requires_grad]


def apply_loras(model, recipe) -> list[str]:
    """Adapters on every tower whose recipe encoder has ``lora``; the frozen parameters' names in the step
    module (``model.encoders.<m>.<name>``), which checkpoints leave out."""
    frozen = []
    for m, spec in recipe.modalities.items():
        if spec.encoder.lora is not None:
            where = f"modalities.{m}.encoder.lora"
            base = apply_lora(model.encoders[m], spec.encoder.lora, where)
            n = sum(p.numel() for p in model.encoders[m].parameters() if p.requires_grad)
            layers = sum(1 for _ in lora_layers(model.encoders[m]))
            print(f"{m} encoder: LoRA r={spec.encoder.lora.r} on {layers} layers, {n / 1e6:.3f}M adapter parameters train")
            frozen += [f"model.encoders.{m}.{name}" for name in base]
    return frozen


def lora_layers(encoder: nn.Module):
    """(parent, attribute, layer) of every peft LoRA layer in ``encoder``."""
    from peft.tuners.lora import LoraLayer

    for name, mod in list(encoder.named_modules()):
        if isinstance(mod, LoraLayer):
            parent_name, _, attr = name.rpartition(".")
            yield encoder.get_submodule(parent_name) if parent_name else encoder, attr, mod


def merge_loras(model, recipe) -> None:
    """Fold every adapter into its base layer and put the plain layer back (an export needs no peft)."""
    for m, spec in recipe.modalities.items():
        if spec.encoder.lora is not None:
            for parent, attr, layer in list(lora_layers(model.encoders[m])):
                layer.merge()
                setattr(parent, attr, layer.get_base_layer())
