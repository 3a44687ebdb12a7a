"""Recipes: overrides, validation and the one-line errors users see."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe

from fuse.base.errors import RecipeError
from fuse.cli import cli
from fuse.recipes.plan import load_plan
from fuse.recipes.recipe import load_recipe


@pytest.fixture
def recipe_file(tmp_path, tiny_text_model, shapes_data):
    return write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data))


def test_overrides_reach_nested_fields_and_lists(recipe_file):
    r = load_recipe(recipe_file, ["train.epochs=7", "output_dir=/tmp/x", "objectives.0.weight=0.5",
                                  "modalities.text.head.options={bias: true}", "optim.betas=[0.8, 0.9]"])
    assert r.train.epochs == 7 and r.output_dir == "/tmp/x"
    assert r.objectives[0].weight == 0.5
    assert r.modalities["text"].head.options == {"bias": True}
    assert r.optim.betas == (0.8, 0.9)


def test_defaults_live_in_the_schema(recipe_file):
    r = load_recipe(recipe_file)
    assert r.train.precision == "auto" and r.schedule.warmup_steps == 0
    assert r.modalities["image"].encoder.frozen is True


@pytest.mark.parametrize("override, expected", [
    (["modalities.image.encoder.name=dinov9"], "Unknown encoder 'dinov9' at modalities.image.encoder; registered: "),
    (["train.batchsize=3"], "train.batchsize: unknown field"),
    (["train.epochs=zero"], "train.epochs: Input should be a valid integer"),
    (["modalities.text.head.options.depth=2"], "modalities.text.head.options.depth: unknown field"),
    (["objectives=[]"], "objectives: Value error, at least one objective"),
    (["train.precision=fp8"], "train.precision: Input should be 'auto', 'fp32', 'bf16' or 'fp16'"),
])
def test_bad_recipes_name_the_field(recipe_file, override, expected):
    with pytest.raises(RecipeError) as err:
        load_plan(recipe_file, override)
    assert expected in str(err.value)
    assert str(recipe_file) in str(err.value)


def test_all_errors_are_collected_into_one_message(recipe_file):
    with pytest.raises(RecipeError) as err:
        load_plan(recipe_file, ["modalities.image.encoder.name=nope", "objectives.0.name=also-nope"])
    msg = str(err.value)
    assert "Unknown encoder 'nope'" in msg and "Unknown objective 'also-nope'" in msg
    assert "timm (fuse-align" in msg  # lists what is available with its package


def test_unknown_encoder_lists_registered_ones(recipe_file):
    with pytest.raises(RecipeError) as err:
        load_plan(recipe_file, ["modalities.image.encoder.name=dinov3"])
    for name in ("hf-text", "hf-vision", "timm"):
        assert name in str(err.value)


def test_invalid_yaml_names_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodalities: [unclosed\n")
    with pytest.raises(RecipeError, match=r"bad.yaml: invalid YAML \(line \d+, column \d+\)"):
        load_plan(bad)


def test_override_syntax_error(recipe_file):
    with pytest.raises(RecipeError, match="must look like key.sub=value"):
        load_plan(recipe_file, ["train.epochs"])


def test_recipe_cannot_name_an_import_path(recipe_file):
    with pytest.raises(RecipeError, match="Unknown encoder 'os.system'"):
        load_plan(recipe_file, ["modalities.image.encoder.name=os.system"])


def test_yaml_tags_that_construct_objects_are_refused(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="invalid YAML"):
        load_plan(evil)


@pytest.mark.parametrize("args, expected", [
    (["train", "missing.yaml"], "Recipe file not found: missing.yaml"),
    (["train", "RECIPE", "modalities.image.encoder.name=dinov3"], "Unknown encoder 'dinov3'"),
    (["train", "RECIPE", "data.train=nowhere.jsonl"], "data.train: manifest nowhere.jsonl not found"),
])
def test_cli_errors_are_one_line_exit_2(recipe_file, args, expected):
    args = [str(recipe_file) if a == "RECIPE" else a for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert expected in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_dry_run_resolves_everything_without_loading(recipe_file):
    result = CliRunner().invoke(cli, ["train", str(recipe_file), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert '"package": "fuse-align' in result.output
    assert '"expansion": 2.0' in result.output  # defaults filled in from the schema


@pytest.mark.parametrize("name", ["quickstart", "vision_text", "fusemix_vision_text", "freeze_align",
                                  "shared_encoder_distill", "shared_encoder_distill_dino", "audio_quickstart", "audio_text", "audio_image"])
def test_shipped_recipes_dry_run(name, tmp_path):
    import yaml

    overrides = []
    for split in ("train", "val"):  # a GPU machine's own manifests: empty stand-ins (the dry run checks they exist)
        if yaml.safe_load(open(f"recipes/{name}.yaml"))["data"].get(split):
            (tmp_path / f"{split}.jsonl").write_text("")
            overrides.append(f"data.{split}={tmp_path / f'{split}.jsonl'}")
    dataset = yaml.safe_load(open(f"recipes/{name}.yaml"))["data"].get("dataset") or {}
    if "root" in dataset.get("options", {}):  # a downloaded dataset's folder: an empty stand-in (checked to exist)
        (tmp_path / "root").mkdir()
        overrides.append(f"data.dataset.options.root={tmp_path / 'root'}")
    result = CliRunner().invoke(cli, ["train", f"recipes/{name}.yaml", *overrides, "--dry-run"])
    assert result.exit_code == 0, result.output
