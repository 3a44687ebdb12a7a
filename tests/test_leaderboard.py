"""`fuse eval MODEL MODEL ... --benchmark ... --out OUT`: one leaderboard (a row per benchmark metric, a column per
model, an average row) as JSON, markdown and PNG; a frozen tower two models share is encoded once; each column
is that model's own `fuse eval --benchmark` number; `fuse report --compare OUT` renders it."""

from __future__ import annotations

import collections
import json

import pytest
from click.testing import CliRunner

import dataset_fixtures as fx
import fuse
from fuse.cli import cli
from fuse.eval.benchmarks import run_benchmarks


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    fx.write_coco(root / "coco")
    fx.write_flickr(root / "flickr30k")
    fx.write_esc50(root / "esc50")
    return root


def test_two_models_make_one_leaderboard_and_a_shared_tower_encodes_once(twin_exports, roots, tmp_path,
                                                                         monkeypatch):
    from fuse.plugins.hf_text import HFTextEncoder
    from fuse.plugins.timm_vision import TimmEncoder

    texts, images = collections.Counter(), []
    preprocess, text_forward, image_forward = HFTextEncoder.preprocess, HFTextEncoder.forward, TimmEncoder.forward
    monkeypatch.setattr(HFTextEncoder, "preprocess", lambda self, raw: texts.update(raw) or preprocess(self, raw))
    calls = collections.Counter()

    def counted(forward, kind):
        def run(self, batch):
            calls[kind] += next(iter(batch.values())).shape[0]
            return forward(self, batch)
        return run

    monkeypatch.setattr(HFTextEncoder, "forward", counted(text_forward, "text"))
    monkeypatch.setattr(TimmEncoder, "forward", counted(image_forward, "image"))
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = CliRunner().invoke(cli, ["eval", *map(str, twin_exports), "--benchmark", "coco,flickr30k", "--root", str(roots),
                                      "--out", str(out), "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output

    captions = [s["raw"] for name in ("coco", "flickr30k")
                for im in json.loads((roots / name / f"dataset_{name}.json").read_text())["images"]
                if im["split"] == "test" for s in im["sentences"]]
    # each distinct caption went through the text encoder once, for both models and both benchmarks
    assert texts == collections.Counter(set(captions)) and calls["text"] == len(set(captions))
    assert calls["image"] == 5 + 4            # the coco and flickr30k test images, once

    board = json.loads((out / "leaderboard.json").read_text())
    assert list(board["models"]) == ["a", "b"]
    assert [(r["benchmark"], r["metric"]) for r in board["rows"]][:2] == [("coco", "image→text R@1"),
                                                                          ("coco", "image→text R@5")]
    assert len(board["rows"]) == 12 and board["averaged_rows"] == 12
    for label, path in zip(("a", "b"), twin_exports):  # each column is the model's own run (latents from the store)
        own = run_benchmarks(fuse.load(path), ["coco", "flickr30k"], roots, cache, baselines=False)["benchmarks"]
        for row in board["rows"]:
            assert row["values"][label] == pytest.approx(own[row["benchmark"]]["metrics"]["model"][row["key"]])
        assert board["average"][label] == pytest.approx(sum(r["values"][label] for r in board["rows"]) / 12)
    assert any(r["values"]["a"] != r["values"]["b"] for r in board["rows"])    # different heads, different numbers
    table = (out / "leaderboard.md").read_text()
    assert table.startswith("| benchmark | split | metric | a | b |")
    assert "| coco | test (5 image, 25 text) | image→text R@1 |" in table
    assert f"| **average** | | 12 rows every model has | **{board['average']['a']:.2f}** |" in table
    assert (out / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert calls["text"] == len(set(captions))   # checking the columns encoded nothing more

    page = tmp_path / "board.html"
    shown = CliRunner().invoke(cli, ["report", "--compare", str(out), "-o", str(page)])
    assert shown.exit_code == 0, shown.output
    html = page.read_text()
    assert "leaderboard" in html and f"{board['rows'][0]['values']['b']:.2f}" in html and "data:image/png" in html

    one = CliRunner().invoke(cli, ["eval", str(twin_exports[0]), "--benchmark", "coco", "--root", str(roots), "--out",
                                   str(tmp_path / "one"), "--cache-dir", str(cache)])
    assert one.exit_code == 0, one.output   # one MODEL: today's output, with its baselines
    assert sorted(p.name for p in (tmp_path / "one").iterdir() if not p.name.startswith(".")) == [
        "benchmarks.json", "benchmarks.md"]


@pytest.mark.parametrize("args, says", [
    (["--task", "retrieval", "--data", "x.jsonl"], "2 MODELs make a leaderboard: give --benchmark"),
    (["--benchmark", "esc50"], "MODEL a: benchmark esc50 needs the towers audio and text"),
])
def test_leaderboard_bad_input_is_one_line_and_writes_nothing(twin_exports, roots, tmp_path, args, says):
    if "--benchmark" in args:
        args = [*args, "--root", str(roots), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, ["eval", *map(str, twin_exports), *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and says in result.output, result.output
    errors = [line for line in result.output.splitlines() if "error" in line]   # (HF's loading bar on stderr aside)
    assert len(errors) == 1 and errors[0].startswith("error: ") and result.output.rstrip().endswith(errors[0])
    assert not (tmp_path / "out").exists()
