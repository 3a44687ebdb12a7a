"""`fuse eval EXPORT --benchmark audiocaps|clotho|msrvtt --root DIR` end to end on fixtures in each dataset's
own layout: the split each protocol names, its sizes, both directions' R@1/5/10, and numbers equal to
``retrieval_metrics`` over the export's own embeddings of the manifest the benchmark built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import dataset_fixtures as fx
import fuse
from fuse.cli import cli
from fuse.eval.retrieval import retrieval_metrics

TEXT_HEAD = {"name": "linear"}


def _export(specs: dict, out: Path) -> Path:
    from fuse.model.aligned import build_model
    from fuse.model.export import export_model

    torch.manual_seed(0)
    return export_model(build_model(specs, embed_dim=16).eval(), out)


@pytest.fixture(scope="module")
def audio_export(tiny_wav2vec2, tiny_text_model, tmp_path_factory) -> Path:
    specs = {"audio": {"encoder": {"name": "hf-audio", "options": {"model": str(tiny_wav2vec2)}},
                       "head": {"name": "linear"}},
             "text": {"encoder": {"name": "hf-text", "options": {"model": str(tiny_text_model)}}, "head": TEXT_HEAD}}
    return _export(specs, tmp_path_factory.mktemp("audio-text") / "export")


@pytest.fixture(scope="module")
def video_export(tiny_text_model, tmp_path_factory) -> Path:
    frames = {"image_encoder": {"name": "timm", "options": {"model": "test_efficientnet", "pretrained": False}},
              "num_frames": 3}
    specs = {"video": {"encoder": {"name": "video-frames", "options": frames},
                       "head": {"name": "temporal", "options": {"pooling": "mean"}}},
             "text": {"encoder": {"name": "hf-text", "options": {"model": str(tiny_text_model)}}, "head": TEXT_HEAD}}
    return _export(specs, tmp_path_factory.mktemp("video-text") / "export")


def _run(export: Path, name: str, root: Path, tmp_path: Path, *extra: str) -> tuple[dict, str]:
    args = ["eval", str(export), "--benchmark", name, "--root", str(root), "--out", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache"), *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "benchmarks.json").read_text())
    assert list(report["benchmarks"]) == [name] and not report["skipped"]
    return report["benchmarks"][name], (tmp_path / "out" / "benchmarks.md").read_text()


def _by_hand(export: Path, manifest: Path, media: str) -> dict[str, float]:
    """Both directions' metrics from the built manifest's records: each record's file is one item, each of its
    captions one text item whose positive is that file."""
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    captions = [(n, t) for n, r in enumerate(records)
                for t in ([r["text"]] if isinstance(r["text"], str) else r["text"])]
    model = fuse.load(export)
    z_media = model.embed(media, [r[media] for r in records])
    z_text = model.embed("text", [t for _, t in captions])
    pairs = torch.tensor([[n, c] for c, (n, _) in enumerate(captions)])
    out = {}
    for key, q, c, pos in ((f"{media}_to_text", z_media, z_text, pairs), (f"text_to_{media}", z_text, z_media,
                                                                          pairs.flip(1))):
        out |= {f"{key}/{m}": v for m, v in retrieval_metrics(q, c, pos).items()}
    return out


def _check(result: dict, table: str, name: str, media: str, split: str, sizes: dict, by_hand: dict) -> None:
    assert result["split"] == split and result["items"] == sizes and result["modalities"] == [media, "text"]
    got = result["metrics"]["model"]
    for direction in (f"{media}_to_text", f"text_to_{media}"):
        a, b = direction.split("_to_")
        for k in (1, 5, 10):
            assert got[f"{direction}/R@{k}"] == pytest.approx(by_hand[f"{direction}/R@{k}"], abs=1e-4)
            row = f"| {name} | {split} ({sizes[media]} {media}, {sizes['text']} text"
            assert any(line.startswith(row) and f"| {a}→{b} R@{k} | {got[f'{direction}/R@{k}']:.2f} |" in line
                       for line in table.splitlines()), table


def _manifest(cache: Path, split: str) -> Path:
    found = sorted(cache.rglob(f"{split}.jsonl"))
    assert len(found) == 1, found
    return found[0]


def test_audiocaps_test_split_with_a_missing_clip(tmp_path, audio_export):
    """AudioCaps' test split (five captions a clip); one clip is gone from YouTube, and by default it is left out."""
    fx.write_audiocaps(tmp_path / "data" / "audiocaps", missing=1)
    result, table = _run(audio_export, "audiocaps", tmp_path / "data", tmp_path)
    manifest = _manifest(tmp_path / "cache", "test")
    assert "yttest0002AB" in (manifest.parent / "missing.txt").read_text()  # the third test clip, counted
    by_hand = _by_hand(audio_export, manifest, "audio")
    _check(result, table, "audiocaps", "audio", "test", {"audio": 2, "text": 10}, by_hand)
    assert result["protocol"] == ""  # AudioCaps' test set has no one published size (clips keep vanishing)


def test_clotho_evaluation_split(tmp_path, audio_export):
    """Clotho's test split is its evaluation set: 2 clips, 5 captions each (names with spaces)."""
    fx.write_clotho(tmp_path / "data" / "clotho")
    result, table = _run(audio_export, "clotho", tmp_path / "data", tmp_path)
    by_hand = _by_hand(audio_export, _manifest(tmp_path / "cache", "test"), "audio")
    _check(result, table, "clotho", "audio", "test", {"audio": 2, "text": 10}, by_hand)
    assert result["protocol"] == "2 of 1,045 clips: not the published protocol"


def test_msrvtt_1k_a_split(tmp_path, video_export):
    """MSR-VTT's 1k-A test set (JSFusion's csv: one sentence per video), not the full 2,990-video test split."""
    fx.write_msrvtt(tmp_path / "data" / "msrvtt")
    result, table = _run(video_export, "msrvtt", tmp_path / "data", tmp_path)
    by_hand = _by_hand(video_export, _manifest(tmp_path / "cache", "test_1k"), "video")
    _check(result, table, "msrvtt", "video", "test_1k", {"video": 2, "text": 2}, by_hand)
    assert result["protocol"] == "2 of 1,000 videos: not the published protocol"
