"""Large-batch options besides GradCache: grad_accum epochs, gradient checkpointing, world-size errors."""

from __future__ import annotations

import pytest
import torch

from fuse.base.errors import RecipeError
from fuse.training.batches import PairStream, StreamOptions, first_micro_step


@pytest.mark.parametrize("accum", [1, 3, 4])
def test_grad_accum_epochs_are_passes(accum):
    """10 batches per pass: every epoch of accumulated steps draws each sample at most once, from its own pass."""
    stream = PairStream(range(40), torch.zeros(40, 2, dtype=torch.long), {}, torch.device("cpu"),
                        StreamOptions(batch_size=4, seed=0))
    n = len(stream)
    per_epoch = n // accum
    for epoch in range(4):
        first = first_micro_step(epoch * per_epoch, per_epoch, accum, n)
        ks = [first_micro_step(epoch * per_epoch + s, per_epoch, accum, n) + j
              for s in range(per_epoch) for j in range(accum)]
        assert ks == list(range(first, first + per_epoch * accum))  # consecutive within the epoch
        samples = torch.cat([stream.indices(k) for k in ks])
        assert len(set(samples.tolist())) == len(samples) == per_epoch * accum * 4
        assert {k // n for k in ks} == {epoch}  # the epoch's own pass, never the previous one's tail


def test_world_size_must_divide_the_batch(monkeypatch):
    from fuse.training import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    assert distributed.local_batch_size(12, "train.batch_size") == 4
    with pytest.raises(RecipeError, match=r"train.batch_size: batch size 10 is not divisible by the world size 3.*"
                                          r"e.g. 9 or 12"):
        distributed.local_batch_size(10, "train.batch_size")


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A 2-layer transformers ViT on 32 px images, saved as a local directory."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    d = tmp_path_factory.mktemp("tiny-vit")
    torch.manual_seed(0)
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8, hidden_dropout_prob=0.1)).save_pretrained(str(d))
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(d))
    return d


def _grads_and_calls(name: str, options: dict, raw: list):
    """Gradients of a train-mode forward (dropout on, seed fixed) and how many module forwards ran."""
    import fuse

    torch.manual_seed(0)
    enc = fuse.create("encoder", name, options).train()
    calls = []
    for m in enc.modules():
        m.register_forward_hook(lambda *_: calls.append(1))
    batch = enc.preprocess(raw)
    torch.manual_seed(1)
    (enc(batch) ** 2).sum().backward()
    return {n: p.grad for n, p in enc.named_parameters() if p.grad is not None}, len(calls)


@pytest.mark.parametrize("encoder", ["hf-text", "hf-vision", "timm"])
def test_gradient_checkpointing_gives_the_plain_gradients(encoder, tiny_text_model, tiny_vit):
    """Same gradients with dropout on; the layers really run again in backward (more forwards)."""
    from PIL import Image

    images = [Image.new("RGB", (32, 32), (40 * i, 100, 30)) for i in range(4)]
    options, raw = {
        "hf-text": ({"model": str(tiny_text_model)}, ["a red circle", "the blue square on white", "green", "a"]),
        "hf-vision": ({"model": str(tiny_vit)}, images),
        "timm": ({"model": "test_vit", "pretrained": False, "model_kwargs": {"drop_path_rate": 0.2}}, images),
    }[encoder]
    want, plain_calls = _grads_and_calls(encoder, options, raw)
    got, calls = _grads_and_calls(encoder, {**options, "gradient_checkpointing": True}, raw)
    assert calls > plain_calls
    assert got.keys() == want.keys() and want
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-7, msg=n)


@pytest.mark.parametrize("encoder", ["hf-text", "hf-vision"])
def test_dropout_option_overrides_the_checkpoint_and_survives_export(encoder, tiny_text_model, tiny_vit, tmp_path):
    """`dropout: 0`: a train-mode forward is deterministic (the checkpoint's 0.1 is not); `dropout: 0.3` sets
    every dropout field of the config; the export's saved config keeps what it trained with."""
    import fuse
    from PIL import Image

    images = [Image.new("RGB", (32, 32), (40 * i, 100, 30)) for i in range(4)]
    source, raw = {"hf-text": (tiny_text_model, ["a red circle", "the blue square on white", "green", "a"]),
                   "hf-vision": (tiny_vit, images)}[encoder]

    def two_forwards(dropout):
        enc = fuse.create("encoder", encoder, {"model": str(source), "dropout": dropout}).train()
        batch = enc.preprocess(raw)
        with torch.no_grad():
            return enc, enc(batch), enc(batch)

    _, a, b = two_forwards(None)
    assert not torch.allclose(a, b)  # the checkpoint's dropout draws new masks
    enc, a, b = two_forwards(0.0)
    assert torch.equal(a, b)
    enc = fuse.create("encoder", encoder, {"model": str(source), "dropout": 0.3})
    fields = {k: v for k, v in enc.model.config.to_dict().items() if "dropout" in k and isinstance(v, float)}
    assert fields and set(fields.values()) == {0.3}, fields
    options = enc.save(tmp_path / "export")
    assert options["dropout"] is None
    again = fuse.create("encoder", encoder, {**options, "model": str(tmp_path / "export")})
    assert again.model.config.hidden_dropout_prob == 0.3
