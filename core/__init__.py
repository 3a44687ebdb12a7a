"""fuse: build multimodal models by aligning pretrained unimodal encoders.

Public API::

    import fuse
    model = fuse.load("runs/quickstart/export")
    z = model.embed("text", ["a red apple"])      # L2-normalised [1, D]

Plugins implement hooks declared in ``fuse.hookspecs`` with ``@fuse.hookimpl``.
"""

from .errors import DataError, FuseError, ModelFileError, PluginError, RecipeError
from .hookspecs import hookimpl
from .interfaces import Encoder, EncoderInfo, Head, Objective, Options, Step

__version__ = "0.1.0"


def load(path, device: str = "cpu"):
    """Load an exported model directory (or a run directory) for embedding."""
    from .export import load_aligned

    return load_aligned(path, device=device)


__all__ = [
    "DataError", "Encoder", "EncoderInfo", "FuseError", "Head", "ModelFileError", "Objective",
    "Options", "PluginError", "RecipeError", "Step", "hookimpl", "load", "__version__",
]
