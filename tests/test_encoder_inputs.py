"""What an encoder consumes is declared once, at registration (``modalities=``: input kinds), and
checked: against the registered input kinds when it registers, against its ``info.input`` when built."""

from __future__ import annotations

import types

import pytest
import torch

import fuse
from fuse.base import plugin_manager
from fuse.base.errors import PluginError
from fuse.recipes.spec import resolve_spec


class _Counts(fuse.Encoder):
    """A tiny text encoder whose info.input is set by its options (to disagree on purpose)."""

    class Options(fuse.Options):
        reads: str = "text"

    def __init__(self, options: Options):
        super().__init__()
        self.info = fuse.EncoderInfo(modality="text", input=options.reads, dim=2)

    def preprocess(self, raw):
        return {"n": torch.tensor([[float(len(t)), 1.0] for t in raw])}

    def forward(self, batch):
        return batch["n"]

    def preprocessing_signature(self):
        return {}

    def save(self, directory):
        return {}


@pytest.fixture
def plugin():
    """Register an in-process plugin whose register_encoders calls ``register(*args, **kw)``; unregister after."""
    made = []

    def make(*args, **kw):
        mod = types.ModuleType(f"inputs_plugin_{len(made)}")
        mod.register_encoders = fuse.hookimpl(lambda register: register(*args, **kw))
        plugin_manager.register_plugin(mod, name=mod.__name__)
        made.append(mod)

    yield make
    for mod in made:
        plugin_manager.unregister_plugin(mod)


def test_an_encoder_that_declares_no_input_kind_is_refused(plugin):
    plugin("counts", _Counts)
    with pytest.raises(PluginError, match=r"encoder 'counts' from inputs_plugin_0: declare the input kinds .*"
                                          r"modalities=\('text',\)"):
        plugin_manager.registry("encoder")


def test_an_encoder_of_an_unregistered_input_kind_is_refused(plugin):
    plugin("counts", _Counts, modalities=("smell",))
    with pytest.raises(PluginError, match=r"encoder 'counts' from inputs_plugin_0 consumes input kind 'smell', "
                                          r"which no installed plugin registers \(registered kinds: .*text"):
        plugin_manager.registry("encoder")


def test_info_input_must_be_a_declared_kind_when_built(plugin):
    plugin("counts", _Counts, modalities=("text",))
    assert fuse.create("encoder", "counts", {}).info.input == "text"           # agrees: built
    assert resolve_spec("encoder", "counts", {}).build().info.input == "text"   # the plan's path too
    for build in (lambda: fuse.create("encoder", "counts", {"reads": "image"}),
                  lambda: resolve_spec("encoder", "counts", {"reads": "image"}).build()):
        with pytest.raises(PluginError, match=r"encoder 'counts' from inputs_plugin_0: _Counts sets EncoderInfo.input "
                                              r"to 'image' but registered modalities=\('text',\)"):
            build()
