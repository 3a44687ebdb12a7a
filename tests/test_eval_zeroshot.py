"""Zero-shot classification against a brute-force formula; template files; errors."""

from __future__ import annotations

import pytest
import torch

from fuse.base.errors import DataError
from fuse.eval import class_embeddings, load_templates, zeroshot_metrics


def test_accuracy_matches_brute_force_with_ties():
    g = torch.Generator().manual_seed(0)
    classes = torch.nn.functional.normalize(torch.randn(6, 4, generator=g), dim=-1)
    classes[5] = classes[2]  # an exact tie between two classes
    labels = torch.randint(0, 6, (40,), generator=g)
    query = torch.nn.functional.normalize(classes[labels] + 0.9 * torch.randn(40, 4, generator=g), dim=-1)
    got = zeroshot_metrics(query, classes, labels, [f"c{i}" for i in range(6)], ks=(1, 3), chunk_size=7)
    # in pure Python: equal classes get equal scores (a BLAS matmul may round two equal columns apart)
    sims = [[sum(a * b for a, b in zip(q, c)) for c in classes.tolist()] for q in query.tolist()]
    top = [sorted(range(6), key=lambda j: (-s[j], j)) for s in sims]
    assert got["top1"] == pytest.approx(100 * sum(t[0] == l for t, l in zip(top, labels.tolist())) / 40)
    assert got["top3"] == pytest.approx(100 * sum(l in t[:3] for t, l in zip(top, labels.tolist())) / 40)
    assert got["per_class_top1"]["c5"] == 0.0  # always loses the tie to c2


def test_class_embedding_is_the_normalised_mean_of_normalised_prompts():
    seen = []

    def embed(texts):
        seen.extend(texts)
        return torch.tensor([[float(len(t)), 1.0] for t in texts])

    emb = class_embeddings(embed, ["cat", "zebra"], ["a {}", "the {} here"])
    assert seen == ["a cat", "the cat here", "a zebra", "the zebra here"]
    n = torch.nn.functional.normalize
    want = n(n(torch.tensor([[5.0, 1.0], [12.0, 1.0]]), dim=-1).mean(0), dim=0)
    assert torch.allclose(emb[0], want)


def test_templates_builtin_and_file(tmp_path):
    assert len(load_templates("imagenet")) == 80 and "a photo of a {}." in load_templates("imagenet")
    f = tmp_path / "t.txt"
    f.write_text("a sound of {}\n\nrecording of a {}\n")
    assert load_templates(str(f)) == ["a sound of {}", "recording of a {}"]
    f.write_text("no placeholder\n")
    with pytest.raises(DataError, match="containing '\\{\\}'"):
        load_templates(str(f))


def test_empty_class_list_is_an_error():
    with pytest.raises(DataError, match="class list is empty"):
        class_embeddings(lambda t: torch.zeros(len(t), 2), [], ["{}"])


def test_top_classes_and_confusion_match_a_python_loop_with_ties():
    """Scores with exact ties (duplicate class rows, repeated values): the k best classes are the
    highest scores, a lower index first among equals; column 0 is the true class exactly at rank 1."""
    from fuse.eval.zeroshot import confusion_matrix, top_classes, true_class_ranks

    gen = torch.Generator().manual_seed(0)
    classes = torch.randint(-2, 3, (6, 4), generator=gen).float()
    classes[4] = classes[1]  # a duplicate class: ties with class 1 on every query
    query = torch.randint(-2, 3, (40, 4), generator=gen).float()
    labels = torch.randint(0, 6, (40,), generator=gen)
    top = top_classes(query, classes, k=3, chunk_size=7)
    counts = torch.zeros(6, 6, dtype=torch.long)
    for i in range(40):
        scores = [float(query[i] @ classes[c]) for c in range(6)]
        want = sorted(range(6), key=lambda c: (-scores[c], c))
        assert top[i].tolist() == want[:3]
        counts[labels[i], want[0]] += 1
    assert torch.equal(confusion_matrix(labels, top[:, 0], 6), counts)
    ranks = true_class_ranks(query, classes, labels, chunk_size=7)
    assert torch.equal(top[:, 0] == labels, ranks == 1)
    assert int(counts.trace()) == int((ranks == 1).sum())
