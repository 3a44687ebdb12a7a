"""`fuse train --dry-run` checks the run's files without loading a model: a missing or unreadable
manifest or model path is one error line naming the recipe field (exit 2); what it cannot check
(hub downloads, datasets a run builds) is named in its summary line."""

from __future__ import annotations

import json

from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe

from fuse.cli import cli


def _dry(recipe, *overrides):
    return CliRunner().invoke(cli, ["train", str(recipe), *overrides, "--dry-run"])


def test_a_complete_recipe_passes_and_says_what_it_checked(tmp_path, tiny_text_model, shapes_data):
    result = _dry(write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data)))
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    # train and val manifests, the local BERT folder; timm's test net is built without weights
    assert last == "dry run: plugins and options resolved; 3 file(s) and folder(s) exist", last
    json.loads(result.output[:result.output.rindex("}") + 1])  # the report itself is still JSON


def test_a_missing_manifest_is_one_line_naming_the_field(tmp_path, tiny_text_model, shapes_data):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data))
    result = _dry(recipe, f"data.val={tmp_path / 'nowhere' / 'val.jsonl'}")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: data.val: {tmp_path / 'nowhere' / 'val.jsonl'} does not exist. Fix the path (or override it: "
        "data.val=PATH), or build the manifest first (fuse data build, docs/getting-started.md 'Your own data')."]


def test_a_folder_or_missing_shard_is_not_a_manifest(tmp_path, tiny_text_model, shapes_data):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data))
    result = _dry(recipe, f"data.train={tmp_path}")
    assert result.exit_code == 2 and "data.train:" in result.output and "not a readable file" in result.output
    result = _dry(recipe, f"data.train={tmp_path / 'shard-{000..001}.tar'}")
    assert result.exit_code == 2 and "shard-000.tar does not exist" in result.output


def test_missing_model_paths_name_their_option(tmp_path, tiny_text_model, shapes_data):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data))
    result = _dry(recipe, f"modalities.text.encoder.options.model={tmp_path / 'no-bert'}")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: modalities.text.encoder.options.model: File or folder not found")
    result = _dry(recipe, "modalities.text.encoder.options.model=pkg:no_such_package_xyz/model")
    assert result.exit_code == 2 and "'no_such_package_xyz', which is not installed" in result.output


def test_hub_models_and_datasets_are_named_as_not_checked(tmp_path, tiny_text_model, shapes_data):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{
        "modalities.text.encoder.options.model": "someone/not-cached-model-xyz"}))
    result = _dry(recipe)
    assert result.exit_code == 0, result.output
    assert ("not checked: modalities.text.encoder.options.model=someone/not-cached-model-xyz (not in the HF cache: "
            "a run downloads it)") in result.output


def test_a_shipped_gpu_recipe_without_its_data_fails_at_dry_run():
    result = _dry("recipes/vision_text.yaml")
    assert result.exit_code == 2
    assert result.output.startswith("error: data.dataset.options.root: ") and "data/coco does not exist" in result.output
