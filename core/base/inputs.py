"""Input kinds: what a manifest value of one kind of input is, and how it becomes a raw input.

The engine knows no kind by name. Each kind (image, text, audio, video, or whatever a plugin
adds, e.g. sensor signals) is registered through ``register_input_kinds`` and answers the
questions the engine asks about a value: is it a file, how is it read, what identifies it in a
cache key, is it usable, and how raw inputs are batched when an encoder does not do it itself.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch

from fuse.base.errors import DataError
from fuse.base.options import Options


class InputKind:
    """One kind of input. Subclass, set ``files``, implement ``read``; register with
    ``register("name", MyKind)`` from a ``register_input_kinds`` hook."""

    Options: ClassVar[type] = Options   # kinds take no options; the registry wants a schema
    name: str = ""                      # set by the registry lookup (``input_kind``)
    files: ClassVar[bool] = True        # manifest values are file paths (relative to the manifest); False: inline
    # File suffixes without the dot, first preferred: what `fuse embed`/`fuse search` keep when listing
    # a folder, and which tar shard members the kind reads (KEY.jpg: "jpg"). Empty: every file.
    extensions: ClassVar[tuple[str, ...]] = ()
    # Limits a recipe sets for every kind (``set_limits``; data.max_image_pixels): a kind reads the ones
    # it knows as ``self.limits[...]`` and refuses a value over them before decoding it.
    limits: ClassVar[dict[str, int]] = {"max_image_pixels": 89_478_485}  # PIL's own default (~9460x9460)

    def read(self, value: Any) -> Any:
        """The raw input an encoder's ``preprocess`` takes; a bad value raises DataError naming it.
        File kinds open ``fuse.open_value(value)`` so that tar shard members read like files."""
        raise NotImplementedError(f"input kind '{self.name}' has no reader")

    def identity(self, value: str) -> str:
        """What identifies ``value`` in a cache key: a file's path, size and mtime (a shard member's: its
        reference and the shard's size and mtime); inline values themselves."""
        from fuse.base.shard_refs import split_ref

        if not self.files:
            return value
        ref = split_ref(value)
        try:
            st = os.stat(ref[0] if ref else value)
        except OSError:
            raise DataError(f"{self.name} file not found: {value}") from None
        return f"{value}|{st.st_size}|{st.st_mtime_ns}"

    def accepts(self, path: str) -> bool:
        """Whether a file found in a folder is one of this kind (by its suffix; see ``extensions``)."""
        return not self.extensions or os.path.splitext(path)[1].lower().lstrip(".") in self.extensions

    def check(self, value: Any) -> None:
        """Raise DataError when ``value`` is unusable (``data.bad_media: skip`` leaves it out); by default: read it."""
        self.read(value)

    def collate(self, raw: list[Any]) -> dict[str, torch.Tensor]:
        """Batch raw inputs for an encoder that has no ``preprocess`` of its own."""
        raise NotImplementedError(f"input kind '{self.name}' cannot batch raw inputs by itself; the encoder must "
                                  "implement preprocess()")


def set_limits(**limits: int | None) -> None:
    """Set the media limits every input kind reads (``InputKind.limits``); None keeps a limit's default."""
    InputKind.limits = {**InputKind.limits, **{k: v for k, v in limits.items() if v is not None}}


def input_kind(name: str, where: str = "") -> InputKind:
    """The registered input kind ``name`` (one shared instance); unknown names are recipe errors."""
    from fuse.base.plugin_manager import registry

    reg = registry("input")
    cached = reg.instances.get(name)
    if cached is None:
        entry = reg.get(name, where)
        cached = entry.cls()
        cached.name = name
        reg.instances[name] = cached
    return cached


def read_value(kind: str, value: Any) -> Any:
    """A manifest value (str) as the kind's raw input; values already read (PIL, clips) pass through."""
    return input_kind(kind).read(value) if isinstance(value, str) else value
