"""Partly unfrozen encoders: only the parameters a recipe names are fine-tuned."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe
from safetensors.torch import load_file

from fuse.base.errors import RecipeError
from fuse.cli import cli
from fuse.recipes.plan import load_plan


def _recipe(tmp_path, tiny_text_model, shapes_data, **encoder):
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{"train.epochs": 2, "train.eval_every": 2})
    r["modalities"]["text"]["encoder"].update(encoder)
    return write_recipe(tmp_path / "r.yaml", r)


def test_only_the_named_layer_of_an_unfrozen_encoder_changes(tmp_path, tiny_text_model, shapes_data):
    path = _recipe(tmp_path, tiny_text_model, shapes_data, frozen=False, trainable=["model.encoder.layer.1.*"])
    result = CliRunner().invoke(cli, ["train", str(path)])
    assert result.exit_code == 0, result.output
    trained = load_file(str(tmp_path / "run" / "checkpoints" / "best.safetensors"))
    before = load_file(str(tiny_text_model / "model.safetensors"))
    prefix = "model.encoders.text.model."
    layer0 = [k for k in trained if k.startswith(prefix + "encoder.layer.0.")]
    layer1 = [k for k in trained if k.startswith(prefix + "encoder.layer.1.") and k.endswith("weight")]
    assert layer0 and layer1
    original = lambda k: before.get(k[len(prefix):], before.get("bert." + k[len(prefix):]))  # noqa: E731
    assert all(torch.equal(trained[k], original(k)) for k in layer0)          # frozen part: as pretrained
    assert any(not torch.equal(trained[k], original(k)) for k in layer1)      # named part: fine-tuned
    assert "text encoder: 0.01M of its parameters are trained" in result.output


def test_a_pattern_matching_nothing_names_the_field_and_shows_the_names(tmp_path, tiny_text_model, shapes_data):
    path = _recipe(tmp_path, tiny_text_model, shapes_data, frozen=False, trainable=["blocks.11.*"])
    result = CliRunner().invoke(cli, ["train", str(path)])
    assert result.exit_code == 2
    assert "modalities.text.encoder.trainable: 'blocks.11.*' matches no parameter" in result.output
    assert "model.encoder.layer.0.*" in result.output


def test_trainable_on_a_frozen_encoder_is_a_recipe_error(tmp_path, tiny_text_model, shapes_data):
    with pytest.raises(RecipeError, match="trainable .* needs frozen: false"):
        load_plan(_recipe(tmp_path, tiny_text_model, shapes_data, trainable=["model.*"]))
