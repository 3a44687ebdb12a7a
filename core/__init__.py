"""fuse: build multimodal models by aligning pretrained unimodal encoders.

Public API::

    import fuse
    model = fuse.load("runs/quickstart/export")
    z = model.embed("text", ["a red apple"])      # L2-normalised [1, D]
    hits = model.search(["a red apple"], "photos/", k=5)   # indexes photos/ once, then searches it
    run_dir = fuse.train("recipes/quickstart.yaml", ["train.epochs=3"])

``__all__`` is the whole plugin surface: built-in plugins import nothing else from fuse (a test
checks it), so a third-party plugin can do everything they do. Plugins implement hooks declared
in ``fuse.base.hookspecs`` with ``@fuse.hookimpl``.
"""

from __future__ import annotations

import importlib

# name -> "module:attribute". Resolved on first use (PEP 562), so `import fuse` (and the `fuse`
# command, which imports it) loads neither torch nor the training loop nor any plugin until a
# name that needs them is touched; `from fuse import Encoder` works as before.
_LAZY = {
    "gather_all": "fuse.base.collectives:gather_all",
    "gather_with_grad": "fuse.base.collectives:gather_with_grad",
    **{name: f"fuse.base.errors:{name}" for name in ("DataError", "FuseError", "ModelFileError", "PluginError",
                                                     "RecipeError")},
    "enable_hf_checkpointing": "fuse.base.hf:enable_checkpointing",
    **{name: f"fuse.base.hf:{name}" for name in ("hf_source", "load_hf", "save_hf", "truncate_layers")},
    "hookimpl": "fuse.base.hookspecs:hookimpl",
    **{name: f"fuse.base.inputs:{name}" for name in ("InputKind", "input_kind", "read_value")},
    **{name: f"fuse.base.interfaces:{name}" for name in ("Encoder", "EncoderInfo", "Fusion", "Head", "Objective",
                                                         "Step")},
    **{name: f"fuse.base.latents:{name}" for name in ("Tokens", "length_mask", "masked_mean")},
    "LogitScale": "fuse.base.losses:LogitScale",
    "info_nce": "fuse.base.losses:info_nce",
    "Options": "fuse.base.options:Options",
    "resolve_path": "fuse.base.paths:resolve_path",
    "register_plugin": "fuse.base.plugin_manager:register_plugin",
    "unregister_plugin": "fuse.base.plugin_manager:unregister_plugin",
    "open_value": "fuse.base.shard_refs:open_value",
    "load_state_dict": "fuse.base.weights:load_state_dict",
    "save_state_dict": "fuse.base.weights:save_state_dict",
    "DatasetBuilder": "fuse.data.datasets:DatasetBuilder",
}


def __getattr__(name: str):
    """Import a surface name's module on first use and keep the name (later lookups are plain)."""
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'fuse' has no attribute '{name}'")
    module, attribute = target.split(":")
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The surface names, resolved or not, beside the module's own."""
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"


def load(path, device: str = "cpu"):
    """Load an exported model directory (or a run directory) for embedding."""
    from fuse.model.load import load_aligned

    return load_aligned(path, device=device)


def train(recipe, overrides=(), resume: bool = False):
    """Run a recipe file (with ``key.sub=value`` overrides) end to end, as `fuse train` does;
    returns the run directory."""
    from fuse.recipes.plan import load_plan
    from fuse.training.loop import train as run_plan

    return run_plan(load_plan(recipe, list(overrides)), recipe_path=str(recipe), resume=resume)


def create(kind: str, name: str, options: dict | None = None, where: str = "", **context):
    """Build a registered component by name (e.g. a video encoder building its per-frame image
    encoder): options are validated against its schema; errors name ``where``."""
    from fuse.base.plugin_manager import registry

    return registry(kind).create(name, options, where, **context)


__all__ = [
    # components a plugin implements
    "DatasetBuilder", "Encoder", "EncoderInfo", "Fusion", "Head", "InputKind", "Objective", "Options", "Step",
    "hookimpl",
    # errors a user can cause
    "DataError", "FuseError", "ModelFileError", "PluginError", "RecipeError",
    # helpers plugins share
    "LogitScale", "Tokens", "create", "enable_hf_checkpointing", "gather_all", "gather_with_grad", "hf_source",
    "info_nce", "input_kind", "length_mask", "load_hf", "load_state_dict", "masked_mean", "open_value", "read_value",
    "resolve_path", "save_hf", "save_state_dict", "truncate_layers",
    # using fuse from Python
    "load", "register_plugin", "train", "unregister_plugin", "__version__",
]
