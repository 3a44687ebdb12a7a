"""CLAP's audio tower in hf-audio: tiny config-built CLAP checkpoints (a full ClapModel with
feature fusion, and a lone unfused ClapAudioModel), 16 kHz clips resampled to 48 kHz."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fuse.base.errors import RecipeError
from fuse.base.latents import masked_mean
from fuse.base.plugin_manager import registry
from fuse.plugins.audio import AudioClip

HIDDEN, PROJ = 16, 12  # HTSAT width after two stages (8 * 2), CLAP projection width


def _audio_config(**kw):
    from transformers import ClapAudioConfig

    # 16 mel bins and a 64x64 "spectrogram image": 1 s windows of 101 frames fit its 256 columns.
    return ClapAudioConfig(spec_size=64, num_mel_bins=16, window_size=4, depths=[1, 1], num_attention_heads=[1, 2],
                           patch_embeds_hidden_size=8, hidden_size=HIDDEN, projection_dim=PROJ, **kw)


def _extractor(truncation: str):
    from transformers import ClapFeatureExtractor

    return ClapFeatureExtractor(feature_size=16, max_length_s=1, truncation=truncation, padding="repeatpad")


@pytest.fixture(scope="module")
def tiny_clap(tmp_path_factory):
    """A full ClapModel (audio + text towers) with feature fusion, as laion/clap-htsat-fused."""
    from transformers import ClapConfig, ClapModel, ClapTextConfig

    d = tmp_path_factory.mktemp("clap")
    torch.manual_seed(0)
    text = ClapTextConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=40)
    audio = _audio_config(enable_fusion=True, fusion_type="aff_2d")
    ClapModel(ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=PROJ)) \
        .save_pretrained(str(d), safe_serialization=True)
    _extractor("fusion").save_pretrained(str(d))
    return d


@pytest.fixture(scope="module")
def tiny_clap_audio(tmp_path_factory):
    """A lone ClapAudioModel (no projection), unfused, whose extractor crops long clips at random."""
    from transformers import ClapAudioModel

    d = tmp_path_factory.mktemp("clap_audio")
    torch.manual_seed(1)
    ClapAudioModel(_audio_config()).save_pretrained(str(d), safe_serialization=True)
    _extractor("rand_trunc").save_pretrained(str(d))
    return d


def _tone(freq: float, seconds: float, rate: int = 16000) -> AudioClip:
    t = torch.arange(int(seconds * rate)) / rate
    return AudioClip(0.3 * torch.sin(2 * torch.pi * freq * t) + 0.05 * torch.sin(2 * torch.pi * 3 * freq * t), rate)


def _encoder(directory, **options):
    return registry("encoder").create("hf-audio", {"model": str(directory), **options}).eval()


def _embed(enc, clips):
    with torch.no_grad():
        return enc(enc.preprocess(clips))


def _reference(directory, clips):
    """transformers alone: ClapModel and features of the clips resampled to 48 kHz (none longer than 1 s)."""
    import torchaudio.functional as AF
    from transformers import ClapFeatureExtractor, ClapModel

    model = ClapModel.from_pretrained(str(directory)).eval()
    extractor = ClapFeatureExtractor.from_pretrained(str(directory))
    waves = [AF.resample(c.waveform, c.sample_rate, 48000).numpy() for c in clips]
    feats = extractor(waves, sampling_rate=48000, return_tensors="pt")
    return model, {"input_features": feats["input_features"], "is_longer": torch.zeros(len(clips), 1, dtype=torch.bool)}


@pytest.mark.parametrize("options, dim", [({"pooling": "mean"}, HIDDEN), ({"pooling": "pooler"}, HIDDEN),
                                          ({"pooling": "pooler", "projection": True}, PROJ),
                                          ({"pooling": "mean", "projection": True}, PROJ)])
def test_clap_dims_match_info_for_pooled_and_token_outputs(tiny_clap, options, dim):
    enc = _encoder(tiny_clap, **options)
    assert enc.info.dim == dim and enc.info.sample_rate == 48000
    batch = enc.preprocess([_tone(440, 1.0), _tone(220, 0.6)])
    with torch.no_grad():
        pooled = enc(batch)
        tokens, mask = enc.forward_tokens(batch)
    assert pooled.shape == (2, dim)
    assert tokens.shape[0] == 2 and tokens.shape[2] == dim and mask.shape == tokens.shape[:2]
    assert mask.dtype == torch.bool


def test_clap_projection_equals_clap_audio_features(tiny_clap):
    """pooling: pooler + projection: true is CLAP's own audio embedding (before its L2 norm)."""
    clips = [_tone(440, 1.0), _tone(300, 0.5)]
    ours = _embed(_encoder(tiny_clap, pooling="pooler", projection=True), clips)
    model, feats = _reference(tiny_clap, clips)
    with torch.no_grad():
        ref = model.get_audio_features(**feats).pooler_output
    assert torch.allclose(torch.nn.functional.normalize(ours, dim=-1), ref, atol=1e-5)


def test_clap_mean_excludes_the_zero_padding_after_a_short_clip(tiny_clap):
    mean, pooler = _encoder(tiny_clap, pooling="mean"), _encoder(tiny_clap, pooling="pooler")
    full, short = _tone(440, 1.0), _tone(440, 0.6)  # 0.6 s: one copy, then 0.4 s of zeros in the 1 s window
    # A clip that fills the window: every token holds audio, so the mean is CLAP's pooler.
    assert torch.allclose(_embed(mean, [full]), _embed(pooler, [full]), atol=1e-5)
    assert not torch.allclose(_embed(mean, [short]), _embed(pooler, [short]), atol=1e-3)
    batch = mean.preprocess([full, short])
    with torch.no_grad():
        tokens, mask = mean.forward_tokens(batch)
        pooled = mean(batch)
    assert bool(mask[0].all()) and 0.55 < float(mask[1].float().mean()) < 0.7
    assert torch.allclose(masked_mean(tokens, mask), pooled, atol=1e-5)
    # Golden value: HTSAT's (frequency x time) map averaged over the time columns the 0.6 s span.
    model, feats = _reference(tiny_clap, [short])
    with torch.no_grad():
        fmap = model.audio_model(**feats).last_hidden_state  # [1, D, F, T]
    columns = math.ceil(0.6 * fmap.shape[-1])
    assert torch.allclose(pooled[1], fmap[0, :, :, :columns].mean((1, 2)), atol=1e-5)


def test_clap_eval_is_deterministic_and_batch_independent(tiny_clap):
    """The fusion extractor marks a random clip of each batch 'longer'; fuse must not let it."""
    enc = _encoder(tiny_clap, pooling="pooler", projection=True)
    a, b = _tone(440, 0.8), _tone(660, 0.9)
    twice = _embed(enc, [a, a])
    assert torch.allclose(twice[0], twice[1], atol=1e-6)
    assert torch.allclose(_embed(enc, [a, b])[0], _embed(enc, [a])[0], atol=1e-5)
    assert torch.equal(_embed(enc, [a, b]), _embed(enc, [a, b]))


def test_clap_long_clips_take_the_centre_window_in_eval(tiny_clap_audio):
    """Even with max_seconds: null, a 3 s clip is cropped by fuse (centre) to the extractor's 1 s
    window, so the extractor's random crop (rand_trunc) never applies."""
    import torchaudio.functional as AF

    enc = _encoder(tiny_clap_audio, max_seconds=None)
    long = _tone(440, 3.0)
    wave = AF.resample(long.waveform, 16000, 48000)
    start = (wave.shape[0] - 48000) // 2
    centre = AudioClip(wave[start:start + 48000], 48000)
    first = _embed(enc, [long])
    assert torch.equal(first, _embed(enc, [long]))
    assert torch.allclose(first, _embed(enc, [centre]), atol=1e-5)


@pytest.mark.parametrize("options", [{"pooling": "mean", "projection": True}, {"pooling": "pooler"}])
def test_clap_save_load_round_trips_offline(tiny_clap, tmp_path, options):
    from safetensors import safe_open

    enc = _encoder(tiny_clap, **options)
    clips = [_tone(440, 1.0), _tone(220, 0.6)]
    before = _embed(enc, clips)
    saved = enc.save(tmp_path / "enc")
    assert saved["model"] == "./" and saved["projection"] == options.get("projection", False)
    json.dumps(saved)
    with safe_open(str(tmp_path / "enc" / "model.safetensors"), "pt") as f:
        assert not any("text" in k for k in f.keys())  # the text tower stays behind
    again = _encoder(tmp_path / "enc", **{**saved, "model": str(tmp_path / "enc")})
    assert (again.info.dim, again.info.sample_rate) == (enc.info.dim, 48000)
    assert torch.allclose(_embed(again, clips), before, atol=1e-6)


def test_lone_clap_audio_tower_round_trips(tiny_clap_audio, tmp_path):
    enc = _encoder(tiny_clap_audio, pooling="pooler")
    clips = [_tone(330, 0.7)]
    saved = enc.save(tmp_path / "enc")
    again = _encoder(tmp_path / "enc", **{**saved, "model": str(tmp_path / "enc")})
    assert torch.allclose(_embed(again, clips), _embed(enc, clips), atol=1e-6)


def test_projection_needs_a_checkpoint_with_clap_projection(tiny_clap_audio):
    with pytest.raises(RecipeError, match="projection: true needs CLAP's audio projection"):
        _encoder(tiny_clap_audio, projection=True)


@pytest.mark.parametrize("options, message", [({"pooling": "pooler"}, "pooling: pooler needs"),
                                              ({"projection": True}, "projection: true needs")])
def test_clap_only_options_are_recipe_errors_elsewhere(tiny_wav2vec2, options, message):
    with pytest.raises(RecipeError, match=message):
        _encoder(tiny_wav2vec2, **options)
