"""The latent cache key covers everything that changes latents, and the cache round-trips."""

from __future__ import annotations

import os

import pytest
import torch

from fuse.cache import cache_key, cached_latents
from fuse.errors import ModelFileError
from fuse.plugin_manager import registry


@pytest.fixture(scope="module")
def encoder(tiny_text_model):
    return registry("encoder").create("hf-text", {"model": str(tiny_text_model)})


def _spec(enc):
    return {"name": "hf-text", "options": enc.options.model_dump()}


def test_key_depends_on_options_weights_preprocessing_and_values(encoder, tiny_text_model):
    values = ["a red circle", "a blue square"]
    base = cache_key(encoder, _spec(encoder), values)
    assert cache_key(encoder, _spec(encoder), values) == base
    assert cache_key(encoder, _spec(encoder), values[::-1]) != base
    assert cache_key(encoder, {**_spec(encoder), "options": {"pooling": "cls"}}, values) != base
    other = registry("encoder").create("hf-text", {"model": str(tiny_text_model), "max_length": 8})
    assert cache_key(other, _spec(encoder), values) != base  # preprocessing signature changed
    with torch.no_grad():
        encoder.model.embeddings.word_embeddings.weight[0, 0] += 1.0
    try:
        assert cache_key(encoder, _spec(encoder), values) != base  # weights fingerprint changed
    finally:
        with torch.no_grad():
            encoder.model.embeddings.word_embeddings.weight[0, 0] -= 1.0


def test_key_changes_when_a_file_changes(tmp_path):
    from conftest import _draw

    enc = registry("encoder").create("timm", {"model": "test_efficientnet", "pretrained": False})
    p = tmp_path / "x.png"
    _draw("circle", (255, 0, 0)).save(p)
    k1 = cache_key(enc, {"name": "timm"}, [str(p)])
    _draw("square", (0, 0, 255)).save(p)
    os.utime(p, ns=(1, 1))
    assert cache_key(enc, {"name": "timm"}, [str(p)]) != k1


def test_cache_round_trip_and_corruption(encoder, tmp_path, capsys):
    values = ["a red circle", "a blue square", "the green triangle on white"]
    first = cached_latents(encoder, _spec(encoder), values, tmp_path, torch.device("cpu"), batch_size=2, label="t")
    again = cached_latents(encoder, _spec(encoder), values, tmp_path, torch.device("cpu"), label="t")
    assert torch.equal(first, again) and first.shape == (3, 32)
    assert "read 3 cached latents" in capsys.readouterr().out
    shard = next(tmp_path.rglob("shard-00000.safetensors"))
    shard.write_bytes(b"broken")
    with pytest.raises(ModelFileError, match="is corrupt .* Delete that folder"):
        cached_latents(encoder, _spec(encoder), values, tmp_path, torch.device("cpu"), label="t")
