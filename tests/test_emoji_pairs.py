"""The `emoji` dataset: real rendered OpenMoji images with their CLDR names, split by base emoji."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from fuse.datasets import build_dataset
from fuse.plugins.emoji_pairs import group_key


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("emoji")
    # Skin-tone variants sit in the middle of the emoji table; take enough to include some.
    return root, build_dataset("emoji", {"max_items": 700, "val_fraction": 0.3, "seed": 1}, root)


def test_manifests_hold_real_images_and_captions(built):
    _, splits = built
    train, val = _records(splits["train"]), _records(splits["val"])
    assert len(train) + len(val) > 650 and len(val) > 100
    for r in train[:20] + val[:20]:
        im = Image.open(splits["train"].parent / r["image"])
        assert im.size == (224, 224) and im.convert("L").getextrema()[0] < 200  # something is drawn
        assert isinstance(r["text"], str) and r["text"] and ":" not in r["text"] and "_" not in r["text"]


def test_variants_of_one_emoji_never_straddle_the_split(built):
    import re

    _, splits = built
    side = {}
    tone = re.compile(r",? ?(light|medium-light|medium|medium-dark|dark) skin tone")
    for split in ("train", "val"):
        for r in _records(splits[split]):
            base = tone.sub("", r["text"]).strip()  # grouping written independently of the plugin
            side.setdefault(base, set()).add(split)
    assert any("skin tone" in r["text"] for r in _records(splits["train"]) + _records(splits["val"]))
    straddling = {k: v for k, v in side.items() if len(v) > 1}
    assert straddling == {}


def test_group_key_merges_skin_tone_and_gender_variants():
    thumbs = ["\U0001F44D", "\U0001F44D\U0001F3FB", "\U0001F44D\U0001F3FF"]
    assert len({group_key(s) for s in thumbs}) == 1
    runners = ["\U0001F3C3", "\U0001F3C3\u200D\u2640\uFE0F", "\U0001F3C3\U0001F3FD\u200D\u2642\uFE0F"]
    assert len({group_key(s) for s in runners}) == 1
    assert group_key("\U0001F468\u200D\U0001F9B0") == group_key("\U0001F469\u200D\U0001F9B0")  # man/woman: red hair
    assert group_key("\U0001F436") != group_key("\U0001F431")  # dog face vs cat face


def test_build_is_deterministic_and_reused(built, tmp_path, capsys):
    root, splits = built
    again = build_dataset("emoji", {"max_items": 700, "val_fraction": 0.3, "seed": 1}, root)
    assert again == splits and "using the build" in capsys.readouterr().out
    other = build_dataset("emoji", {"max_items": 700, "val_fraction": 0.3, "seed": 1}, tmp_path)
    assert other["val"].read_text() == splits["val"].read_text()
    assert (splits["train"].parent / "LICENSES.md").read_text().startswith("Images: rendered from the OpenMoji")
