"""Dataset `emoji`: rendered OpenMoji emoji paired with their CLDR names, split by base emoji."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import fuse

from .render import LICENSE_NOTE, EmojiOptions, captions, rendered_emoji, write_splits


class EmojiPairs(fuse.DatasetBuilder):
    """Rendered OpenMoji emoji paired with their names (about 3,940 pairs), split by base emoji."""

    modalities = ("image", "text")

    class Options(EmojiOptions):
        captions: Literal["name", "name+aliases"] = "name"   # aliases: 'text' is a list per image

    def build(self, out_dir: Path) -> dict[str, Path]:
        opts = self.options
        aliases = opts.captions == "name+aliases"
        splits = {"train": [], "val": []}
        for e in rendered_emoji(out_dir, opts, "rendering emoji"):
            texts = captions(e.seq, e.data, aliases)
            splits[e.split].append({"id": e.ident, "image": e.image, "text": texts if aliases else texts[0],
                                    "group": e.group})
        return write_splits(out_dir, splits, "emoji", LICENSE_NOTE)
