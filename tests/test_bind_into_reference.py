"""Binding a new modality into a reference's joint space: the shipped recipes/audio_into_clip.yaml, run for
real on a tiny config-built CLIP (exported with `fuse export hf:DIR OUT`) and a tiny Wav2Vec2, trains only
the audio tower's head against CLIP's frozen image tower; CLIP's towers come out unchanged and zero-shot
audio classification runs through CLIP's text tower."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import fuse
from conftest import COLORS, _draw
from fuse.cli import cli
from reference_fixtures import make_clip

FREQS = {"red": 220.0, "green": 440.0, "blue": 880.0, "yellow": 1760.0}


def _pairs(root):
    """Audio–image pairs (a tone per colour, a shape of that colour) and the tones with their colour as label."""
    root.mkdir()
    records, labelled = [], []
    for color, freq in FREQS.items():
        for j, shape in enumerate(("circle", "square")):
            t = np.arange(int((0.4 + 0.1 * j) * 16000)) / 16000
            wav, png = root / f"{color}-{j}.wav", root / f"{color}-{shape}.png"
            sf.write(wav, (0.3 * np.sin(2 * np.pi * freq * t)).astype("float32"), 16000)
            _draw(shape, COLORS[color]).save(png)
            records.append({"audio": str(wav), "image": str(png)})
            labelled.append({"audio": str(wav), "label": color})
    for name, rows in (("pairs", records), ("labels", labelled)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "pairs.jsonl", root / "labels.jsonl"


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bound(tmp_path_factory, tiny_wav2vec2):
    """The shipped recipe trained for a few steps onto a tiny CLIP export: (base export, run dir, data)."""
    tmp = tmp_path_factory.mktemp("bind")
    base = tmp / "clip-export"
    result = CliRunner().invoke(cli, ["export", f"hf:{make_clip(tmp / 'clip')}", str(base)])
    assert result.exit_code == 0, result.output
    pairs, labels = _pairs(tmp / "data")
    overrides = [f"base_model={base}", "embed_dim=8", "device=cpu", f"output_dir={tmp / 'run'}",
                 f"modalities.audio.encoder.options.model={tiny_wav2vec2}", "modalities.audio.encoder.options.pooling=mean",
                 f"data.train={pairs}", f"data.val={pairs}", "data.num_workers=0", "data.encode_batch_size=8",
                 f"data.cache_dir={tmp / 'cache'}", "schedule.warmup_steps=0", "optim.lr=1e-2",
                 "train.batch_size=4", "train.epochs=2", "train.log_every=1"]
    result = CliRunner().invoke(cli, ["train", "recipes/audio_into_clip.yaml", *overrides])
    assert result.exit_code == 0, result.output
    return base, tmp / "run", labels


def test_only_the_audio_tower_trains_and_clip_stays_as_published(bound):
    base, run, _ = bound
    model = fuse.load(run / "export")
    assert model.modalities == ("image", "text", "audio") and model.embed_dim == 8
    for tower in ("image", "text"):  # CLIP's towers: byte for byte the reference's weights, identity heads
        assert _sha(run / "export" / tower / "encoder" / "tower.safetensors") == \
            _sha(base / tower / "encoder" / "tower.safetensors")
        assert model.specs[tower]["head"].name == "identity"
    clip = fuse.load(base)
    assert torch.allclose(model.embed("text", ["a red tone"]), clip.embed("text", ["a red tone"]), atol=1e-6)
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) >= 3 and all(math.isfinite(x) for x in losses)
    assert losses[-1] != losses[0]
    from safetensors.torch import load_file

    trained = load_file(str(run / "checkpoints" / "best.safetensors"))
    assert {k.split(".")[2] for k in trained if k.startswith("model.heads.")} == {"audio"}


def test_zero_shot_audio_through_clips_text_tower(bound):
    _, run, labels = bound
    result = CliRunner().invoke(cli, ["eval", str(run / "export"), "--task", "zeroshot", "--modality", "audio",
                                      "--data", str(labels), "--templates", "sound", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert 0 <= report["metrics"]["model"]["top1"] <= 100
    retrieval = CliRunner().invoke(cli, ["eval", str(run / "export"), "--modalities", "audio,image", "--data",
                                         str(labels.parent / "pairs.jsonl"), "--json", "--no-baselines"])
    assert retrieval.exit_code == 0, retrieval.output
    assert "audio_to_image/R@1" in json.loads(retrieval.stdout)["metrics"]["model"]
