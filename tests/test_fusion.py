"""The shared fusion transformer: token latents, training, export, and recipe checks."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe

import fuse
from fuse.base import plugin_manager
from fuse.base.errors import RecipeError
from fuse.base.latents import Tokens
from fuse.cli import cli
from fuse.recipes.plan import load_plan

ROOT = Path(__file__).resolve().parents[1]


def _fusion_recipe(tmp_path, text_model, data, **kw):
    return tiny_recipe(tmp_path, text_model, data, **{
        "modalities.image.encoder.options": {"model": "test_vit", "pretrained": False, "num_layers": 1},
        "modalities.image.head": {"name": "linear"},
        "fusion": {"name": "shared-transformer", "options": {"width": 16, "heads": 2}},
        **kw})


def test_fusion_trains_on_cached_tokens_and_round_trips(tmp_path, tiny_text_model, shapes_data):
    recipe = write_recipe(tmp_path / "r.yaml", _fusion_recipe(tmp_path, tiny_text_model, shapes_data,
                                                             **{"train.epochs": 20, "train.eval_every": 10,
                                                                "optim.lr": 1e-2, "optim.weight_decay": 0.0}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    assert "cached 24 new latents" in result.output
    assert any(p.name.startswith("timm-tokens-") for p in (tmp_path / "cache" / "latent-store").iterdir())
    results = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert results["after"]["mean/R@1"] > results["before"]["mean/R@1"]
    model = fuse.load(tmp_path / "run")
    assert model.fusion is not None and (tmp_path / "run" / "export" / "fusion.safetensors").exists()
    texts = ["a red circle", "a blue square"]
    z = model.embed("text", texts)
    assert z.shape == (2, 16) and torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)
    # the fusion module is shared: the same parameters embed both modalities
    assert {n for n, _ in model.fusion.named_parameters()} >= {"cls", "modality_embedding.image", "modality_embedding.text"}
    # so one tower alone is not this model: --tower is refused, nothing written
    one = CliRunner().invoke(cli, ["export", str(tmp_path / "run"), str(tmp_path / "text"), "--tower", "text"])
    assert one.exit_code == 2 and "share a 'shared-transformer' fusion block" in one.output
    assert not (tmp_path / "text").exists()


def test_padding_tokens_do_not_change_the_embedding():
    f = plugin_manager.registry("fusion").create("shared-transformer", {"width": 8, "heads": 2},
                                                  modalities=("a", "b"), out_dim=4).eval()
    x = torch.randn(1, 3, 8)
    padded = torch.cat([x, torch.randn(1, 2, 8)], dim=1)
    mask = torch.tensor([[True, True, True, False, False]])
    with torch.no_grad():
        assert torch.allclose(f("a", x, torch.ones(1, 3, dtype=torch.bool)), f("a", padded, mask), atol=1e-5)


def test_tokens_concatenate_with_padding():
    a = Tokens(torch.ones(2, 3, 4), torch.ones(2, 3, dtype=torch.bool))
    b = Tokens(torch.ones(1, 5, 4), torch.ones(1, 5, dtype=torch.bool))
    c = Tokens.cat([a, b])
    assert c.values.shape == (3, 5, 4) and c.mask.sum(1).tolist() == [3, 3, 5]
    assert c[torch.tensor([2])].values.shape == (1, 5, 4)


def test_fusion_with_a_pooled_only_encoder_is_a_recipe_error(tmp_path, tiny_text_model, shapes_data):
    spec = importlib.util.spec_from_file_location(
        "fuse_char_ngrams", ROOT / "docs" / "examples" / "fuse-char-ngrams" / "fuse_char_ngrams.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin_manager.register_plugin(module, name="fuse_char_ngrams")
    try:
        recipe = write_recipe(tmp_path / "r.yaml", _fusion_recipe(
            tmp_path, tiny_text_model, shapes_data, **{"modalities.text.encoder": {"name": "char-ngrams"}}))
        with pytest.raises(RecipeError, match="modalities.text.encoder: 'char-ngrams' gives only pooled latents"):
            load_plan(recipe)
    finally:
        plugin_manager.unregister_plugin(module)


class _MeanFusion(fuse.Fusion):
    """A third-party fusion with its own option names: a masked mean then a linear map."""

    class Options(fuse.Options):
        size: int = 12   # not `width`: the engine asks the fusion, it reads no option by name

    def __init__(self, options, modalities, out_dim):
        super().__init__(options, modalities, out_dim)
        self.width = options.size
        self.proj = torch.nn.Linear(options.size, out_dim)

    def forward(self, modality, tokens, mask):
        return self.proj(fuse.masked_mean(tokens, mask))


class _FusionPlugin:
    @staticmethod
    @fuse.hookimpl
    def register_fusions(register):
        register("mean-fusion", _MeanFusion)


def test_a_third_party_fusion_with_its_own_options_trains(tmp_path, tiny_text_model, shapes_data):
    fuse.register_plugin(_FusionPlugin, name="mean-fusion-plugin")
    try:
        recipe = _fusion_recipe(tmp_path, tiny_text_model, shapes_data, fusion={"name": "mean-fusion",
                                                                               "options": {"size": 10}})
        result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / "r.yaml", recipe))])
        assert result.exit_code == 0, result.output
        model = fuse.load(tmp_path / "run")
        assert model.heads["image"].out_dim == 10 and model.fusion.width == 10
        assert model.embed("text", ["a red circle"]).shape == (1, 16)
    finally:
        fuse.unregister_plugin(_FusionPlugin)
