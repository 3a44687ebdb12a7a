"""data.fraction: a deterministic, nested share of the training items for data-scaling curves."""

from __future__ import annotations

import pytest

from conftest import tiny_recipe, write_recipe, write_shapes_manifest
from fuse.base.errors import RecipeError
from fuse.data.load import load_data, take_fraction
from fuse.data.manifest import load_pairs
from fuse.recipes.plan import load_plan
from fuse.recipes.recipe import load_recipe


@pytest.mark.parametrize("value", ["0", "-0.1", "1.5"])
def test_out_of_range_fraction_is_a_recipe_error(tmp_path, value):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tmp_path, {"train": "t.jsonl", "val": "v.jsonl"}))
    with pytest.raises(RecipeError, match="data.fraction"):
        load_recipe(recipe, [f"data.fraction={value}"])
    assert load_recipe(recipe, ["data.fraction=1"]).data.fraction == 1


def test_fractions_are_deterministic_and_nested(tmp_path):
    splits = write_shapes_manifest(tmp_path / "shapes", copies=16, captions_per_image=2)
    data = load_pairs(splits["train"], ("image", "text"), ("image",))
    images = {f: set(take_fraction(data, f, seed=0).values["image"]) for f in (0.1, 0.2, 0.5, 1.0)}
    assert images[0.1] <= images[0.2] <= images[0.5] <= images[1.0] == set(data.values["image"])
    assert 0.3 * len(data.values["image"]) < len(images[0.5]) < 0.7 * len(data.values["image"])
    assert set(take_fraction(data, 0.5, seed=0).values["image"]) == images[0.5]
    assert set(take_fraction(data, 0.5, seed=1).values["image"]) != images[0.5]
    half = take_fraction(data, 0.5, seed=0)
    assert len(half) == 2 * len(half.values["image"])   # an image keeps all its captions


def test_fraction_applies_to_training_data_only(tmp_path, tiny_text_model):
    splits = write_shapes_manifest(tmp_path / "shapes", copies=8)
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, splits))
    full = load_data(load_plan(recipe), {"image": "image", "text": "text"}, tmp_path / "cache", None)
    part = load_data(load_plan(recipe, ["data.fraction=0.25"]), {"image": "image", "text": "text"},
                     tmp_path / "cache", None)
    pair = ("image", "text")
    assert len(part["train"].pairs[pair]) < len(full["train"].pairs[pair]) / 2
    assert set(part["train"].values["image"]) <= set(full["train"].values["image"])
    assert len(part["val"].pairs[pair]) == len(full["val"].pairs[pair])
