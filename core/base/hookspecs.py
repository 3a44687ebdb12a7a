"""Hook specifications. Hooks only *register*: each receives a `register` callback.

A plugin module implements any subset, e.g.::

    from fuse import hookimpl

    @hookimpl
    def register_encoders(register):
        register("my-encoder", MyEncoder, modalities=("image",))

Hooks may gain arguments over time; they are never renamed.
"""

import pluggy

hookspec = pluggy.HookspecMarker("fuse")
hookimpl = pluggy.HookimplMarker("fuse")


@hookspec
def register_input_kinds(register):
    """Register InputKind classes: register(name, cls). A kind says how a manifest value becomes a raw input."""


@hookspec
def register_encoders(register):
    """Register Encoder classes: register(name, cls, modalities=(input kinds it consumes,))."""


@hookspec
def register_heads(register):
    """Register Head classes that map an encoder latent into the shared space."""


@hookspec
def register_objectives(register):
    """Register Objective classes (losses, possibly with parameters)."""


@hookspec
def register_fusions(register):
    """Register Fusion classes: modules shared by both towers that pool token sequences."""


@hookspec
def register_datasets(register):
    """Register DatasetBuilder classes that write paired manifests from some source."""


@hookspec
def register_loggers(register):
    """Register experiment trackers (recipe ``logging: [name, ...]``, ``fuse train --log NAME``): classes with
    an Options schema, ``requires`` (modules they import) and log(record), image(name, path, step), finish(results)."""


@hookspec
def register_commands(cli):
    """Add click commands to the `fuse` CLI group (``cli.add_command``). Asked when a command name is
    not built-in, and by `fuse --help` whenever a plugin other than fuse's own is present."""
