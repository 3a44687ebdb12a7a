"""fuse's retrieval and zero-shot numbers equal clip_benchmark's metric functions on the same embeddings:
recall@K both ways, top-1/top-5, mean per-class recall, CLIP's prompt ensembling, and a COCO-format set
whose captions repeat (every caption is its own query, as clip_benchmark scores it)."""

from __future__ import annotations

import builtins
import json

import numpy
import pytest
import torch
from clip_benchmark.metrics import zeroshot_classification as cb_zeroshot
from clip_benchmark.metrics import zeroshot_retrieval as cb_retrieval
from click.testing import CliRunner
from sklearn.metrics import balanced_accuracy_score

import dataset_fixtures as fx
import fuse
from fuse.cli import cli
from fuse.eval import evaluate_retrieval
from fuse.eval.zeroshot import class_embeddings_from, prompt_texts, zeroshot_metrics


def clip_benchmark_recalls(images: torch.Tensor, texts: torch.Tensor, owner: list[int], ks=(1, 5, 10)) -> dict:
    """clip_benchmark's zeroshot_retrieval.evaluate from its embeddings on: texts x images scores, one positive
    image per text, recall@K 'at least one positive in the top K', in percent, with fuse's key names."""
    scores = texts @ images.T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(texts)), owner] = True
    out = {}
    for k in ks:
        t2i = cb_retrieval.batchify(cb_retrieval.recall_at_k, scores, positive, 7, "cpu", k=k) > 0
        i2t = cb_retrieval.batchify(cb_retrieval.recall_at_k, scores.T, positive.T, 7, "cpu", k=k) > 0
        out[f"text_to_image/R@{k}"] = 100 * t2i.float().mean().item()
        out[f"image_to_text/R@{k}"] = 100 * i2t.float().mean().item()
    return out


def test_recall_at_k_both_ways_equals_clip_benchmark():
    torch.manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(40, 16), dim=-1)
    owner = [i for i in range(40) for _ in range(1 + i % 5)]        # 1 to 5 captions an image
    texts = torch.nn.functional.normalize(images[owner] + 1.2 * torch.randn(len(owner), 16), dim=-1)
    pairs = torch.tensor([[o, t] for t, o in enumerate(owner)])
    ours = evaluate_retrieval(images, texts, pairs, ("image", "text"))
    theirs = clip_benchmark_recalls(images, texts, owner)
    assert 0 < theirs["text_to_image/R@1"] < 100 and 0 < theirs["image_to_text/R@1"] < 100   # not a trivial case
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=1e-4), key


class _Prompts:
    """clip_benchmark's model and tokenizer over a fixed table of prompt embeddings: the tokenizer gives each
    prompt's row number, encode_text looks the rows up, encode_image passes the (given) image embeddings on."""

    def __init__(self, prompts: list[str], table: torch.Tensor):
        self.row, self.table = {p: i for i, p in enumerate(prompts)}, table

    def tokenizer(self, texts):
        return torch.tensor([self.row[t] for t in texts])

    def encode_text(self, ids):
        return self.table[ids]

    def encode_image(self, images):
        return images


def test_zeroshot_top1_top5_mean_per_class_and_prompt_ensembling_equal_clip_benchmark(monkeypatch):
    # clip_benchmark 1.6.2's accuracy() calls float() on a one-element array, which numpy 2.x refuses: its
    # module gets a float() that takes the one element; nothing else of it changes
    monkeypatch.setattr(cb_zeroshot, "float", lambda x: builtins.float(numpy.asarray(x).reshape(-1)[0]),
                        raising=False)
    torch.manual_seed(1)
    classes = [f"class {c}" for c in range(12)]
    templates = ["a photo of a {}.", "a drawing of a {}.", "{} in the wild."]
    prompts = prompt_texts(classes, templates)
    # unnormalised prompt embeddings of different lengths: normalise, average, normalise is what is checked
    table = torch.randn(len(prompts), 24) * torch.rand(len(prompts), 1) * 5
    labels = torch.arange(90) % 12
    centres = torch.nn.functional.normalize(table.view(12, 3, 24).mean(1), dim=-1)
    queries = torch.nn.functional.normalize(centres[labels] + 0.25 * torch.randn(90, 24), dim=-1)

    stub = _Prompts(prompts, table)
    classifier = cb_zeroshot.zero_shot_classifier(stub, stub.tokenizer, classes, [t.replace("{}", "{c}")
                                                                                   for t in templates], "cpu", amp=False)
    ours_cls = class_embeddings_from(table, len(classes), len(templates))
    assert torch.allclose(ours_cls, classifier.T, atol=1e-6)

    loader = [(queries[i:i + 16], labels[i:i + 16]) for i in range(0, 90, 16)]
    logits, target = cb_zeroshot.run_classification(stub, classifier, loader, "cpu", amp=False)
    top1, top5 = cb_zeroshot.accuracy(logits, target, topk=(1, 5))
    per_class = balanced_accuracy_score(target, logits.argmax(1))  # what clip_benchmark reports
    ours = zeroshot_metrics(queries, ours_cls, labels, classes)
    assert 0 < top1 < 1 and top5 > top1
    assert ours["top1"] == pytest.approx(100 * top1, abs=1e-4)
    assert ours["top5"] == pytest.approx(100 * top5, abs=1e-4)
    assert ours["mean_per_class_top1"] == pytest.approx(100 * per_class, abs=1e-4)


def coco_with_repeats(root):
    """Karpathy's dataset_coco.json (14 test images) where captions repeat across images, as COCO's do."""
    data = fx.karpathy("coco", {"train": 1, "test": 14})
    for n, im in enumerate(data["images"]):
        fx.image(root / im["filepath"] / im["filename"], n, jitter=n)   # every image a distinct rendering
        if n % 3 == 0:
            im["sentences"][4]["raw"] = "a picture"                  # one caption five test images share
        if n in (4, 5):
            im["sentences"][3]["raw"] = "a shape on white"
    (root / "dataset_coco.json").write_text(json.dumps(data))
    return [im for im in data["images"] if im["split"] == "test"]


def test_coco_with_repeated_captions_scores_every_caption_as_clip_benchmark_does(twin_exports, tmp_path):
    export = twin_exports[0]  # a tiny image-text model (random weights, real architectures)
    test = coco_with_repeats(tmp_path / "data" / "coco")
    texts = [s["raw"] for im in test for s in im["sentences"]]
    assert len(set(texts)) < len(texts)
    result = CliRunner().invoke(cli, ["eval", str(export), "--benchmark", "coco", "--root", str(tmp_path / "data"),
                                      "--cache-dir", str(tmp_path / "cache"), "--no-baselines", "--json"])
    assert result.exit_code == 0, result.output
    coco = json.loads(result.stdout[result.stdout.index("{"):])["benchmarks"]["coco"]
    assert coco["items"] == {"image": 14, "text": 70}                 # every caption, repeats included

    model = fuse.load(export)
    images = model.embed("image", [str(tmp_path / "data" / "coco" / im["filepath"] / im["filename"]) for im in test])
    theirs = clip_benchmark_recalls(images, model.embed("text", texts), [n for n, im in enumerate(test)
                                                                         for _ in im["sentences"]])
    for key, value in theirs.items():
        assert coco["metrics"]["model"][key] == pytest.approx(value, abs=1e-4), key
