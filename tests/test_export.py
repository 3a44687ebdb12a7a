"""Export and load: plain safetensors, same embeddings after the round trip, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import COLORS, SHAPES, _draw
from safetensors.torch import load_file

import fuse
from fuse.base.errors import ModelFileError, PluginError
from fuse.cli import cli
from fuse.model.aligned import build_model
from fuse.model.export import export_model


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
    card = (tmp_path / "again" / "README.md").read_text()
    after = json.loads((tmp_path / "run" / "eval.json").read_text())["after"]
    assert f"| mean/R@1 | " in card and f"{after['mean/R@1']:.2f} |" in card  # the run's eval.json
    assert "```yaml" in card and "name: tiny" in card and "## Intended use and limits" in card
    assert (tmp_path / "again" / "metrics.png").read_bytes()[:4] == b"\x89PNG" and "![metrics.png]" in card
    one = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), str(tmp_path / "text"), "--tower", "text"])
    assert one.exit_code == 0, one.output
    assert torch.allclose(fuse.load(tmp_path / "text").embed("text", texts), a.embed("text", texts), atol=1e-6)
    assert (tmp_path / "text" / "modules.json").exists() and (tmp_path / "text" / "metrics.png").exists()


def test_text_tower_alone_loads_in_fuse_and_sentence_transformers(tiny_text_model, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    torch.manual_seed(1)
    specs = {"image": {"encoder": {"name": "timm", "options": {"model": "test_vit", "pretrained": False}},
                       "head": {"name": "linear"}},
             "text": {"encoder": {"name": "hf-text", "options": {"model": str(tiny_text_model), "max_length": 8}},
                      "head": {"name": "residual-mlp", "options": {"depth": 1}}}}
    model = build_model(specs, embed_dim=12).eval()
    texts = ["a red circle", "the blue square on white " * 4, "green"]  # the long one is truncated at 8 tokens
    want = model.embed("text", texts)
    out = export_model(model, tmp_path / "text", tower="text")
    assert not (out / "image").exists() and not list(out.rglob("*.py"))
    alone = fuse.load(out)
    assert alone.modalities == ("text",)
    assert torch.allclose(alone.embed("text", texts), want, atol=1e-6)
    # sentence-transformers 6 imports a module class outside its namespace only with trust_remote_code;
    # the class is fuse.model.sentence_transformers.FuseHead from the installed package, not a file in the export.
    got = st.SentenceTransformer(str(out), trust_remote_code=True, device="cpu").encode(texts, convert_to_tensor=True)
    assert torch.allclose(got.float(), want, atol=1e-5)
    assert "SentenceTransformer" in (out / "README.md").read_text()
    # exports written before the package layout name the old module path; it still loads
    modules = out / "modules.json"
    text = modules.read_text()
    assert "fuse.model.sentence_transformers.FuseHead" in text
    modules.write_text(text.replace("fuse.model.sentence_transformers.FuseHead", "fuse.sentence_transformers.FuseHead"))
    got = st.SentenceTransformer(str(out), trust_remote_code=True, device="cpu").encode(texts, convert_to_tensor=True)
    assert torch.allclose(got.float(), want, atol=1e-5)


def test_tower_export_bad_requests(model, tmp_path):
    with pytest.raises(fuse.FuseError, match="--tower audio: this model has towers image, text"):
        export_model(model, tmp_path / "x", tower="audio")
    fused = build_model({m: {"encoder": {"name": "timm" if m == "image" else "hf-text",
                                         "options": model.specs[m]["encoder"].options.model_dump()},
                             "head": {"name": "linear"}} for m in ("image", "text")}, embed_dim=8,
                        fusion={"name": "shared-transformer", "options": {"width": 16, "heads": 2}},
                        encoders=dict(model.encoders))
    with pytest.raises(fuse.FuseError, match="share a 'shared-transformer' fusion block.*export the whole model"):
        export_model(fused, tmp_path / "y", tower="text")
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda f: f.write_bytes(f.read_bytes()[:-4]), "bytes but was exported as"),
    (lambda f: f.write_bytes(f.read_bytes()[:-1] + bytes([f.read_bytes()[-1] ^ 1])), "does not match its sha256"),
    (lambda f: f.unlink(), "is missing from the export"),
])
def test_tampered_export_file_is_named(model, tmp_path, damage, message):
    out = export_model(model, tmp_path / "export")
    damage(out / "text" / "head.safetensors")
    with pytest.raises(ModelFileError, match=f"text/head.safetensors.*{message}"):
        fuse.load(out)

