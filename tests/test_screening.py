"""Unusable media: by default the run stops naming the file; `data.bad_media: skip` leaves out
the pairs that use it and lists it, in training and in `fuse eval`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe

from fuse.base.errors import DataError
from fuse.cli import cli
from fuse.data.manifest import load_pairs
from fuse.data.screening import drop_bad_media
from fuse.plugins.audio import read_audio


def _manifest(tmp_path, records):
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_without_drops_pairs_and_orphans_and_keeps_the_rest_aligned(tmp_path):
    for name in "abc":
        (tmp_path / f"{name}.png").write_bytes(b"x")
    data = load_pairs(_manifest(tmp_path, [{"image": "a.png", "text": ["x", "y"]}, {"image": "b.png", "text": "z"},
                                           {"image": "c.png", "text": "x"}]), ("image", "text"), ("image",))
    kept = data.without({"image": {str(tmp_path / "b.png")}})
    as_strings = {(kept.values["image"][i].rsplit("/", 1)[1], kept.values["text"][j]) for i, j in kept.pairs.tolist()}
    assert as_strings == {("a.png", "x"), ("a.png", "y"), ("c.png", "x")}
    assert kept.values["text"] == ["x", "y"]          # 'z' had no other partner: no orphan distractor
    assert len(kept.values["image"]) == 2


def test_silent_and_empty_audio_files_are_errors_naming_the_file(tmp_path):
    sf.write(tmp_path / "silent.wav", np.zeros(16000, dtype=np.float32), 16000)
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    for name, words in (("silent.wav", "silent throughout"), ("empty.wav", "0 samples")):
        with pytest.raises(DataError) as err:
            read_audio(str(tmp_path / name))
        assert name in str(err.value) and words in str(err.value) and "data.bad_media: skip" in str(err.value)


def test_audio_screening_skips_silent_and_corrupt_clips(tmp_path):
    t = np.linspace(0, 1, 16000, dtype=np.float32)
    sf.write(tmp_path / "ok.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000)
    sf.write(tmp_path / "silent.flac", np.zeros(16000, dtype=np.float32), 16000)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF not really a wave file")
    data = load_pairs(_manifest(tmp_path, [{"audio": "ok.wav", "text": "a tone"}, {"audio": "silent.flac", "text": "b"},
                                           {"audio": "corrupt.wav", "text": "c"}]), ("audio", "text"), ("audio",))
    log = tmp_path / "skipped.txt"
    kept = drop_bad_media(data, {"audio": "audio", "text": "text"}, tmp_path / "cache", log, "train")
    assert [v.rsplit("/", 1)[1] for v in kept.values["audio"]] == ["ok.wav"] and kept.values["text"] == ["a tone"]
    lines = log.read_text().splitlines()
    assert sorted(line.split("\t")[2].rsplit("/", 1)[1] for line in lines) == ["corrupt.wav", "silent.flac"]
    assert all(line.startswith("train\taudio\t") for line in lines)
    # The verdicts are cached: a second pass does not need to read the files again.
    (tmp_path / "silent.flac").touch()  # a changed mtime is a new fingerprint ...
    assert len(list((tmp_path / "cache" / "screened").iterdir())) == 1
    drop_bad_media(data, {"audio": "audio", "text": "text"}, tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "screened").iterdir())) == 2  # ... so it is checked again


@pytest.mark.slow
def test_training_stops_on_a_corrupt_image_unless_told_to_skip(tmp_path, tiny_text_model, shapes_data):
    root = tmp_path / "shapes"
    shutil.copytree(shapes_data["train"].parent, root)
    first = json.loads((root / "train.jsonl").read_text().splitlines()[0])
    (root / first["image"]).write_bytes(b"\x89PNG truncated")
    splits = {"train": root / "train.jsonl", "val": root / "val.jsonl"}
    runner = CliRunner()
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, splits, **{"train.epochs": 1}))
    result = runner.invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 2, result.output
    assert first["image"].split("/")[-1] in result.output and "data.bad_media: skip" in result.output
    result = runner.invoke(cli, ["train", str(recipe), "data.bad_media=skip"])
    assert result.exit_code == 0, result.output
    skipped = (tmp_path / "run" / "skipped_media.txt").read_text().splitlines()
    assert len(skipped) == 1 and first["image"].split("/")[-1] in skipped[0]
    # fuse eval on the same manifest: an error by default, a skip when asked.
    result = runner.invoke(cli, ["eval", str(tmp_path / "run" / "export"), "--data", str(splits["train"]),
                                 "--no-baselines"])
    assert result.exit_code == 2 and "--skip-bad-media" in result.output, result.output
    result = runner.invoke(cli, ["eval", str(tmp_path / "run" / "export"), "--data", str(splits["train"]),
                                 "--skip-bad-media", "--json", "--no-baselines"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["pairs"] == 23
