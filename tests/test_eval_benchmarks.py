"""`fuse eval MODEL --benchmark ... --root DIR`: each benchmark's protocol on fixture datasets, its numbers
equal to brute force over the model's own embeddings, skips and bad input as one line."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import dataset_fixtures as fx
import fuse
from fuse.cli import cli
from fuse.eval.benchmarks import BENCHMARKS
from fuse.plugins.datasets.layout import class_names


def brute_recall(sims: torch.Tensor, positives: list[set[int]], k: int) -> float:
    """Percent of queries whose best-scoring positive has fewer than k candidates scored above it."""
    hits = []
    for q, pos in enumerate(positives):
        best = max(sims[q, j] for j in pos)
        hits.append(int((sims[q] > best).sum()) < k)
    return 100 * sum(hits) / len(hits)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    fx.write_coco(root / "coco")
    fx.write_flickr(root / "flickr30k")
    fx.write_imagenet(root / "imagenet")
    fx.write_esc50(root / "esc50")
    return root


def test_benchmark_all_matches_brute_force(tmp_path, roots, trained_shapes_export, monkeypatch):
    # CLIP's 80 templates over 1,000 classes is 80k prompts; the protocol is the same with one here
    template = tmp_path / "one.txt"
    template.write_text("a photo of a {}.\n")
    monkeypatch.setitem(BENCHMARKS, "imagenet", dataclasses.replace(BENCHMARKS["imagenet"], templates=str(template)))
    args = ["eval", str(trained_shapes_export), "--benchmark", "all", "--root", str(roots), "--out",
            str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "benchmarks.json").read_text())
    assert set(report["benchmarks"]) == {"coco", "flickr30k", "imagenet"}
    assert "needs the towers audio and text" in report["skipped"]["esc50"]
    assert report["skipped"]["msrvtt"].startswith("no msrvtt/ under")
    table = (tmp_path / "out" / "benchmarks.md").read_text()
    assert "| coco | test (5 image, 25 text; 5 of 5,000 images: not the published protocol) | image→text R@1 |" in table
    assert "- skipped esc50: benchmark esc50 needs" in table
    assert "| imagenet | val (8 queries, 1000 classes; 8 of 50,000 images: not the published protocol) | top-1 (paper) |" \
        in table

    model = fuse.load(trained_shapes_export)
    coco = report["benchmarks"]["coco"]
    records = [json.loads(x) for x in (roots / "coco" / "dataset_coco.json").read_text().splitlines()][0]["images"]
    test = [im for im in records if im["split"] == "test"]
    assert coco["split"] == "test" and coco["items"] == {"image": 5, "text": 25}
    images = [str(roots / "coco" / im["filepath"] / im["filename"]) for im in test]
    texts = [s["raw"] for im in test for s in im["sentences"]]
    sims = model.embed("image", images) @ model.embed("text", texts).T
    owner = [n for n, im in enumerate(test) for _ in im["sentences"]]
    for k in (1, 5, 10):
        i2t = brute_recall(sims, [{j for j, o in enumerate(owner) if o == n} for n in range(len(test))], k)
        t2i = brute_recall(sims.T, [{o} for o in owner], k)
        assert coco["metrics"]["model"][f"image_to_text/R@{k}"] == pytest.approx(i2t, abs=1e-4)
        assert coco["metrics"]["model"][f"text_to_image/R@{k}"] == pytest.approx(t2i, abs=1e-4)

    imagenet = report["benchmarks"]["imagenet"]
    names, wnids = class_names("imagenet"), class_names("imagenet_synsets")
    cls = F.normalize(model.embed("text", [f"a photo of a {n}." for n in names], 256), dim=-1)
    files = sorted((roots / "imagenet" / "val").rglob("*.JPEG"))
    pred = (model.embed("image", [str(p) for p in files]) @ cls.T).argmax(1)
    truth = [wnids.index(p.parent.name) for p in files]
    top1 = 100 * sum(int(p == t) for p, t in zip(pred.tolist(), truth)) / len(files)
    assert imagenet["classes"] == 1000 and imagenet["queries"] == 8
    assert imagenet["metrics"]["model"]["top1"] == pytest.approx(top1, abs=1e-4)
    assert set(imagenet["metrics"]) == {"model", "untrained heads"}

    again = CliRunner().invoke(cli, args)   # the latent store holds every value: nothing is encoded again
    assert again.exit_code == 0 and "read 5 cached latents" in again.output and "new latents" not in again.output


def test_esc50_five_fold_mean(tmp_path, roots, monkeypatch):
    """ESC-50's number is the mean over its five folds of the per-fold accuracy."""
    from fuse.eval import benchmarks

    seen = []

    def fake_zeroshot(model, manifest, labels, field, templates, query, text, class_names, **kw):
        fold = int(manifest.stem[-1])
        seen.append((fold, templates, tuple(class_names)))
        return {"templates": 8, "queries": 3, "metrics": {"model": {"top1": 10.0 * fold, "top5": 100.0,
                                                                    "mean_per_class_top1": 5.0 * fold}}}

    monkeypatch.setattr(benchmarks, "run_zeroshot", fake_zeroshot)
    model = type("M", (), {"modalities": ("audio", "text")})()
    out = benchmarks.run_benchmark(model, "esc50", roots / "esc50", tmp_path / "cache")
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5] and {s[1] for s in seen} == {"sound"}
    assert seen[0][2] == ("dog", "rooster", "crackling fire")
    assert out["metrics"]["model"] == {"top1": 30.0, "top5": 100.0, "mean_per_class_top1": 15.0}
    assert out["queries"] == 15 and out["folds"] == [f"fold{f}" for f in range(1, 6)]


@pytest.mark.parametrize("args, says", [
    (["--benchmark", "cocoa", "--root", "."], "unknown benchmark(s) cocoa; choose from coco, flickr30k"),
    (["--benchmark", "esc50", "--root", "ROOT"],
     "benchmark esc50 needs the towers audio and text; this model has image, text (no audio)"),
    (["--benchmark", "coco"], "--benchmark NAME[,NAME...]|all and --root DIR go together"),
    (["--benchmark", "coco", "--root", "ROOT/esc50"], "holds neither dataset_coco.json (Karpathy's splits) nor"),
    (["--benchmark", "coco", "--root", "ROOT", "--data", "x.jsonl"], "--data is for --task runs"),
])
def test_benchmark_bad_input_is_one_line(tmp_path, roots, trained_shapes_export, args, says):
    args = [a.replace("ROOT", str(roots)) for a in args]
    result = CliRunner().invoke(cli, ["eval", str(trained_shapes_export), *args, "--cache-dir", str(tmp_path / "c"),
                                      "--out", str(tmp_path / "out")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and says in errors[0], result.output
    assert not (tmp_path / "out").exists()


def test_eval_help_lists_every_benchmark():
    out = CliRunner().invoke(cli, ["eval", "--help"]).output
    assert all(name in out for name in BENCHMARKS)
