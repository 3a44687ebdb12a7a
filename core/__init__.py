"""fuse: build multimodal models by aligning pretrained unimodal encoders.

Public API::

    import fuse
    model = fuse.load("runs/quickstart/export")
    z = model.embed("text", ["a red apple"])      # L2-normalised [1, D]
    hits = model.search(["a red apple"], "photos/", k=5)   # indexes photos/ once, then searches it
    run_dir = fuse.train("recipes/quickstart.yaml", ["train.epochs=3"])

``__all__`` is the whole plugin surface: built-in plugins import nothing else from fuse (a test
checks it), so a third-party plugin can do everything they do. Plugins implement hooks declared
in ``fuse.api.hookspecs`` with ``@fuse.hookimpl``.
"""

from __future__ import annotations

from fuse.api.collectives import gather_all, gather_with_grad
from fuse.api.errors import DataError, FuseError, ModelFileError, PluginError, RecipeError
from fuse.api.hf import enable_checkpointing as enable_hf_checkpointing
from fuse.api.hf import hf_source, load_hf, save_hf, truncate_layers
from fuse.api.hookspecs import hookimpl
from fuse.api.inputs import InputKind, input_kind, read_value
from fuse.api.interfaces import Encoder, EncoderInfo, Fusion, Head, Objective, Step
from fuse.api.latents import Tokens, length_mask, masked_mean
from fuse.api.losses import LogitScale, info_nce
from fuse.api.options import Options
from fuse.api.paths import resolve_path
from fuse.api.plugin_manager import register_plugin, unregister_plugin
from fuse.api.shard_refs import open_value
from fuse.api.weights import load_state_dict, save_state_dict
from fuse.data.datasets import DatasetBuilder
from fuse.training import loop as _loop

__version__ = "0.1.0"


def load(path, device: str = "cpu"):
    """Load an exported model directory (or a run directory) for embedding."""
    from fuse.model.load import load_aligned

    return load_aligned(path, device=device)


def train(recipe, overrides=(), resume: bool = False):
    """Run a recipe file (with ``key.sub=value`` overrides) end to end, as `fuse train` does;
    returns the run directory."""
    from fuse.recipes.plan import load_plan

    return _loop.train(load_plan(recipe, list(overrides)), recipe_path=str(recipe), resume=resume)


def create(kind: str, name: str, options: dict | None = None, where: str = "", **context):
    """Build a registered component by name (e.g. a video encoder building its per-frame image
    encoder): options are validated against its schema; errors name ``where``."""
    from fuse.api.plugin_manager import registry

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
