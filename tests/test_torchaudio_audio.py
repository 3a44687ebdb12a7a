"""torchaudio audio encoders (wav2vec 2.0, HuBERT, WavLM): tiny config-built models saved to
local checkpoints, checked against torchaudio's own truncated model and against transformers."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from fuse.base.errors import ModelFileError, RecipeError
from fuse.base.plugin_manager import registry
from fuse.cli import cli
from fuse.plugins.audio import AudioClip

# Every argument of torchaudio.models.wav2vec2_model, at a tiny size; dropouts off.
TINY = dict(extractor_mode="layer_norm", extractor_conv_layer_config=[(16, 10, 5), (16, 8, 4)],
            extractor_conv_bias=True, encoder_embed_dim=32, encoder_projection_dropout=0.0,
            encoder_pos_conv_kernel=8, encoder_pos_conv_groups=2, encoder_num_layers=2, encoder_num_heads=2,
            encoder_attention_dropout=0.0, encoder_ff_interm_features=64, encoder_ff_interm_dropout=0.0,
            encoder_dropout=0.0, encoder_layer_norm_first=True, encoder_layer_drop=0.0, aux_num_out=None)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: on a shared CPU, waking more threads costs more than the work itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clips():
    t = torch.linspace(0, 1, 16000)  # with an offset, so that waveform normalisation shows
    return [AudioClip(0.3 * torch.sin(2 * torch.pi * f * t) + 0.1, 16000) for f in (220, 440)] + \
           [AudioClip(0.2 * torch.sin(2 * torch.pi * 330 * t[:8000]) + 0.1, 16000)]


def _create(options):
    return registry("encoder").create("torchaudio", options).eval()


def _embed(enc, clips):
    with torch.no_grad():
        return enc(enc.preprocess(clips))


def _tiny_model(**overrides):
    from torchaudio.models import wav2vec2_model

    torch.manual_seed(0)
    return wav2vec2_model(**{**TINY, **overrides}).eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny torchaudio model and its weights as a safetensors checkpoint."""
    model = _tiny_model()
    path = tmp_path_factory.mktemp("ta") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


@pytest.mark.parametrize("extractor_mode", ["layer_norm", "group_norm"])
def test_padding_in_a_batch_does_not_change_a_clip_latent(extractor_mode):
    # group norm normalises over the whole time axis: padding would leak in unless handled
    torch.manual_seed(0)
    enc = _create({"config": {**TINY, "extractor_mode": extractor_mode}})
    clips = _clips()
    batch, alone = _embed(enc, clips), _embed(enc, clips[2:])
    assert batch.shape == (3, 32) and enc.info.dim == 32 and enc.info.sample_rate == 16000
    assert torch.allclose(batch[2], alone[0], atol=1e-5)  # the short clip, padded in the batch
    assert not torch.allclose(batch[0], batch[1], atol=1e-3)


@pytest.mark.parametrize("layer_norm_first", [True, False])
def test_num_layers_equals_torchaudio_model_of_the_first_layers(tmp_path, layer_norm_first):
    """Reference: torchaudio's own 1-layer model given the first layer's weights."""
    full = _tiny_model(encoder_layer_norm_first=layer_norm_first)
    state = {k: v.contiguous() for k, v in full.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    options = {"config": {**TINY, "encoder_layer_norm_first": layer_norm_first},
               "checkpoint": str(tmp_path / "w.safetensors")}
    clips = _clips()[:2]
    first, both = _embed(_create({**options, "num_layers": 1}), clips), _embed(_create(options), clips)
    one = _tiny_model(encoder_layer_norm_first=layer_norm_first, encoder_num_layers=1)
    one.load_state_dict({k: v for k, v in state.items() if ".layers.1." not in k})
    with torch.no_grad():
        expected = one(torch.stack([c.waveform for c in clips]))[0].mean(1)
        assert torch.allclose(first, expected, atol=1e-5)
        assert torch.allclose(both, full(torch.stack([c.waveform for c in clips]))[0].mean(1), atol=1e-5)
        if not layer_norm_first:  # post-LN: the model's own intermediate output of layer 1
            inter = full.extract_features(torch.stack([c.waveform for c in clips]), num_layers=1)[0][-1]
            assert torch.allclose(first, inter.mean(1), atol=1e-5)
    assert not torch.allclose(first, both, atol=1e-3)


def test_save_and_load_round_trip(tiny, tmp_path):
    _, path = tiny
    enc = _create({"config": TINY, "checkpoint": str(path), "num_layers": 1, "normalize_waveform": True})
    saved = json.loads(json.dumps(enc.save(tmp_path / "enc")))  # as an export stores them
    assert saved["checkpoint"] == "./model.safetensors" and saved["bundle"] is None and saved["num_layers"] is None
    assert json.loads((tmp_path / "enc" / "config.json").read_text())["config"]["encoder_num_layers"] == 1
    again = _create({**saved, "checkpoint": str(tmp_path / "enc" / "model.safetensors")})
    assert again.info.dim == 32
    assert torch.allclose(_embed(again, _clips()), _embed(enc, _clips()), atol=1e-6)


def test_torch_state_dict_checkpoint_reads_like_safetensors(tiny, tmp_path):
    model, path = tiny
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pt")
    from_pt = _create({"config": TINY, "checkpoint": str(tmp_path / "w.pt")})
    from_st = _create({"config": TINY, "checkpoint": str(path)})
    assert torch.allclose(_embed(from_pt, _clips()), _embed(from_st, _clips()))


def test_checkpoint_holding_pickled_objects_is_refused(tiny, tmp_path):
    import argparse

    state = {**tiny[0].state_dict(), "args": argparse.Namespace(lr=1)}  # unpickling would run code
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(ModelFileError, match="weights_only=True"):
        _create({"config": TINY, "checkpoint": str(tmp_path / "w.pt")})


@pytest.mark.parametrize("options, error, message", [
    ({"bundle": "WAV2VEC2_BASE", "config": TINY}, RecipeError, "exactly one of bundle"),
    ({}, RecipeError, "exactly one of bundle"),
    ({"bundle": "WAV2VEC2_TINY"}, RecipeError, "bundle: .*'WAV2VEC2_TINY'; available: .*HUBERT_BASE.*WAVLM_BASE_PLUS"),
    ({"bundle": "WAV2VEC2_BASE", "architecture": "wavlm"}, RecipeError, "architecture: wavlm contradicts"),
    ({"config": {**TINY, "encoder_hidden": 8}}, RecipeError, "config: .*encoder_hidden.*encoder_embed_dim"),
    ({"config": TINY, "num_layers": 3}, RecipeError, r"num_layers: 3 is out of range; .* 2 transformer layers"),
    ({"config": TINY, "checkpoint": "missing/tiny.safetensors"}, ModelFileError, "not found: .*missing"),
])
def test_recipe_mistakes_are_one_clear_error(options, error, message):
    with pytest.raises(error, match=message):
        _create(options)


@pytest.mark.parametrize("options", [{"config": {**TINY, "encoder_embed_dim": 48}}, {"bundle": "HUBERT_BASE"}])
def test_checkpoint_of_another_architecture_names_the_mismatch(tiny, options):
    with pytest.raises(ModelFileError, match=r"checkpoint: .*tiny.safetensors does not fit .*size mismatch"):
        _create({**options, "checkpoint": str(tiny[1])})


@pytest.mark.parametrize("kind", ["hubert", "wavlm"])
def test_weights_converted_from_transformers_give_transformers_latents(kind, tmp_path):
    """Golden reference: the transformers implementation of the same weights, clip by clip."""
    import transformers as T
    from torchaudio.models.wav2vec2.utils import import_huggingface_model

    Config, Model = {"hubert": (T.HubertConfig, T.HubertModel), "wavlm": (T.WavLMConfig, T.WavLMModel)}[kind]
    extra = {"num_buckets": 8, "max_bucket_distance": 20} if kind == "wavlm" else {}
    torch.manual_seed(0)
    hf = Model(Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                      num_conv_pos_embedding_groups=2, conv_bias=True, feat_extract_norm="layer",
                      do_stable_layer_norm=True, **extra)).eval()
    save_file({k: v.contiguous() for k, v in import_huggingface_model(hf).state_dict().items()},
              str(tmp_path / "w.safetensors"))
    config = {**TINY, **({"encoder_num_buckets": 8, "encoder_max_distance": 20} if kind == "wavlm" else {})}
    enc = _create({"config": config, "architecture": "wavlm" if kind == "wavlm" else "wav2vec2",
                   "checkpoint": str(tmp_path / "w.safetensors"), "normalize_waveform": True})
    clips = _clips()
    ours = _embed(enc, clips)
    with torch.no_grad():
        for clip, latent in zip(clips, ours):
            w = clip.waveform
            w = (w - w.mean()) / torch.sqrt(w.var(unbiased=False) + 1e-7)  # the HF feature extractor's normalisation
            assert torch.allclose(hf(w[None]).last_hidden_state.mean(1)[0], latent, atol=1e-4)


def test_clip_shorter_than_one_frame_is_zero_padded_to_one(tiny):
    enc = _create({"config": TINY, "checkpoint": str(tiny[1])})
    field = 1 + 9 + 7 * 5  # TINY's convs: kernels (10, 8), strides (5, 4)
    short = 0.3 * torch.sin(torch.arange(20.0))
    got = _embed(enc, [AudioClip(short, 16000)])
    assert torch.isfinite(got).all()
    assert torch.allclose(got, _embed(enc, [AudioClip(torch.nn.functional.pad(short, (0, field - 20)), 16000)]), atol=1e-6)


def test_fuse_plugins_lists_torchaudio():
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads(result.stdout) if r["name"] == "torchaudio")
    assert row["kind"] == "encoder" and row["modalities"] == ["audio"]
