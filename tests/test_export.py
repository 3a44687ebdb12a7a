"""Export and load: plain safetensors, same embeddings after the round trip, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import fuse
from fuse.cli import cli
from fuse.errors import ModelFileError, PluginError
from fuse.export import export_model
from fuse.model import build_model

from conftest import COLORS, SHAPES, _draw


@pytest.fixture(scope="module")
def model(tiny_text_model):
    torch.manual_seed(0)
    specs = {"image": {"encoder": {"name": "timm", "options": {"model": "test_vit", "pretrained": False}},
                       "head": {"name": "residual-mlp", "options": {"depth": 1}}},
             "text": {"encoder": {"name": "hf-text", "options": {"model": str(tiny_text_model)}},
                      "head": {"name": "linear"}}}
    return build_model(specs, embed_dim=12).eval()


def _inputs():
    images = [_draw(s, rgb) for rgb in COLORS.values() for s in SHAPES][:5]
    texts = [f"a {c} {s}" for c in COLORS for s in SHAPES][:5]
    return images, texts


def test_round_trip_gives_the_same_embeddings(model, tmp_path):
    images, texts = _inputs()
    before = {"image": model.embed("image", images), "text": model.embed("text", texts)}
    out = export_model(model, tmp_path / "export")
    loaded = fuse.load(out)
    assert loaded.modalities == ("image", "text")
    assert torch.allclose(loaded.embed("image", images), before["image"], atol=1e-5)
    assert torch.allclose(loaded.embed("text", texts), before["text"], atol=1e-5)
    assert torch.allclose(before["text"].norm(dim=-1), torch.ones(5), atol=1e-5)


def test_export_is_plain_safetensors_and_json(model, tmp_path):
    out = export_model(model, tmp_path / "export")
    config = json.loads((out / "fuse_model.json").read_text())
    assert config["modalities"]["image"]["encoder"]["name"] == "timm"
    for f in out.rglob("*.safetensors"):
        assert load_file(str(f))  # readable with plain safetensors, nothing pickled
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt*"))
    heads = load_file(str(out / "text" / "head.safetensors"))
    assert torch.equal(heads["proj.weight"], model.heads["text"].proj.weight.detach())
    assert "| image | timm" in (out / "README.md").read_text()


def test_load_names_the_missing_plugin_package(model, tmp_path):
    out = export_model(model, tmp_path / "export")
    config = json.loads((out / "fuse_model.json").read_text())
    config["modalities"]["text"]["encoder"].update(name="whisper-x", package="fuse-audio-extra 0.2")
    (out / "fuse_model.json").write_text(json.dumps(config))
    with pytest.raises(PluginError, match="needs plugin 'whisper-x' from fuse-audio-extra 0.2; install it"):
        fuse.load(out)


def test_corrupt_head_file_is_a_clear_error(model, tmp_path):
    out = export_model(model, tmp_path / "export")
    (out / "image" / "head.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="head.safetensors"):
        fuse.load(out)


def test_not_a_model_dir(tmp_path):
    with pytest.raises(ModelFileError, match="is not a fuse model"):
        fuse.load(tmp_path)


def test_cli_export_from_run_dir_matches_training_export(tmp_path, tiny_text_model, shapes_data):
    from conftest import tiny_recipe, write_recipe

    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data,
                                                           **{"train.epochs": 2}))
    assert CliRunner().invoke(cli, ["train", str(recipe)]).exit_code == 0
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    texts = ["a red circle", "a blue square"]
    a, b = fuse.load(tmp_path / "run"), fuse.load(tmp_path / "again")
    assert torch.allclose(a.embed("text", texts), b.embed("text", texts), atol=1e-6)
    bad = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), str(tmp_path / "x"), "--checkpoint", "epoch-099"])
    assert bad.exit_code == 2 and "available: best, epoch-002" in bad.output  # keep_checkpoints 1 pruned epoch-001
