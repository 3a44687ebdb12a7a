"""Retrieval metrics against an independent brute-force computation."""

from __future__ import annotations

import pytest
import torch

from fuse.eval import evaluate_retrieval, retrieval_metrics


def brute_force_ranks(q, c, positives):
    """Full similarity matrix, stable sort by (-score, index): rank of the first positive."""
    sims = (q @ c.T).tolist()
    pos = {}
    for i, j in positives.tolist():
        pos.setdefault(i, set()).add(j)
    ranks = []
    for i in range(len(sims)):
        if i not in pos:
            continue
        order = sorted(range(len(sims[i])), key=lambda j: (-sims[i][j], j))
        ranks.append(next(r for r, j in enumerate(order, start=1) if j in pos[i]))
    return ranks


def brute_force_metrics(q, c, positives, ks):
    ranks = brute_force_ranks(q, c, positives)
    out = {f"R@{k}": 100.0 * sum(r <= k for r in ranks) / len(ranks) for k in ks}
    out["mean_rank"] = sum(ranks) / len(ranks)
    s = sorted(ranks)
    out["median_rank"] = float(s[(len(s) - 1) // 2])  # torch.median: the lower middle value
    return out


def _many_to_many(n_images=30, captions=5, dim=8, seed=0, quantise=False):
    g = torch.Generator().manual_seed(seed)
    img = torch.nn.functional.normalize(torch.randn(n_images, dim, generator=g), dim=-1)
    txt = torch.nn.functional.normalize(img.repeat_interleave(captions, 0) + 0.8 * torch.randn(n_images * captions, dim, generator=g), dim=-1)
    if quantise:  # coarse values -> many exact ties
        img, txt = (img * 2).round() / 2, (txt * 2).round() / 2
    pairs = torch.tensor([[i, i * captions + k] for i in range(n_images) for k in range(captions)])
    return img, txt, pairs


@pytest.mark.parametrize("quantise", [False, True])
def test_matches_brute_force_with_five_captions_per_image_and_ties(quantise):
    img, txt, pairs = _many_to_many(quantise=quantise)
    ks = (1, 5, 10)
    got = retrieval_metrics(img, txt, pairs, ks, chunk_size=7)
    want = brute_force_metrics(img, txt, pairs, ks)
    assert got == pytest.approx(want)
    got_t2i = retrieval_metrics(txt, img, pairs.flip(1), ks, chunk_size=7)
    assert got_t2i == pytest.approx(brute_force_metrics(txt, img, pairs.flip(1), ks))


def test_chunked_equals_unchunked():
    img, txt, pairs = _many_to_many(n_images=64, seed=3)
    full = evaluate_retrieval(img, txt, pairs, chunk_size=10**6)
    for chunk in (1, 13, 64):
        assert evaluate_retrieval(img, txt, pairs, chunk_size=chunk) == full


def test_ties_rank_the_lower_index_first():
    q = torch.tensor([[1.0, 0.0]])
    c = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert retrieval_metrics(q, c, torch.tensor([[0, 1]]), ks=(1, 2))["R@1"] == 0.0  # candidate 0 ties and wins
    assert retrieval_metrics(q, c, torch.tensor([[0, 0]]), ks=(1,))["R@1"] == 100.0


def test_keys_and_mean():
    img, txt, pairs = _many_to_many(n_images=10, captions=2)
    m = evaluate_retrieval(img, txt, pairs, names=("image", "text"))
    assert m["mean/R@1"] == pytest.approx((m["image_to_text/R@1"] + m["text_to_image/R@1"]) / 2)
    assert {"image_to_text/mean_rank", "text_to_image/median_rank"} <= set(m)


def test_many_ties_and_many_to_many_positives_match_brute_force_on_every_tiling():
    """Coarse values (exact products) give many equal scores; positives go both ways, and the
    tiles are smaller than the data so rows and positives straddle their boundaries."""
    from fuse.eval.rank import ranks_of_best_positive

    g = torch.Generator().manual_seed(7)
    q = torch.randint(-2, 3, (53, 4), generator=g).float() / 2
    c = torch.randint(-2, 3, (97, 4), generator=g).float() / 2
    pairs = torch.unique(torch.stack([torch.randint(0, 50, (300,), generator=g),   # queries 50-52: no positive
                                      torch.randint(0, 97, (300,), generator=g)], 1), dim=0)
    want = brute_force_ranks(q, c, pairs)
    for query_tile, chunk in ((1, 1), (7, 5), (16, 32), (53, 97), (4096, 4096)):
        got = ranks_of_best_positive(q, c, pairs, chunk_size=chunk, query_tile=query_tile)
        assert got[got > 0].tolist() == want
        assert (got[50:] == 0).all()


def test_positive_on_a_tile_boundary_and_ties_across_it():
    """Equal candidates on both sides of a chunk boundary; the positive is the first or last of a chunk."""
    from fuse.eval.rank import ranks_of_best_positive

    q = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[0.0, 1.0]] * 3 + [[1.0, 0.0]] * 4 + [[0.5, 0.5]])   # chunk 4: rows 3 | 4,5,6,7
    pairs = torch.tensor([[0, 3], [1, 4], [1, 6], [2, 2]])
    want = brute_force_ranks(q, c, pairs)
    assert want == [1, 2, 3]
    for query_tile, chunk in ((1, 4), (2, 4), (3, 3), (3, 8)):
        assert ranks_of_best_positive(q, c, pairs, chunk_size=chunk, query_tile=query_tile).tolist() == want


def test_topk_matches_a_stable_sort_with_ties():
    from fuse.eval import topk

    g = torch.Generator().manual_seed(1)
    q = torch.randint(-2, 3, (20, 3), generator=g).float() / 2
    c = torch.randint(-2, 3, (45, 3), generator=g).float() / 2
    full = q @ c.T
    want_s, want_i = full.sort(dim=1, descending=True, stable=True)
    for k, tile, chunk in ((1, 3, 7), (5, 7, 4), (10, 20, 45), (60, 6, 8)):
        s, i = topk(q, c, k, chunk_size=chunk, query_tile=tile)
        assert torch.equal(i, want_i[:, :k]) and torch.equal(s, want_s[:, :k])


def test_real_valued_scores_match_one_full_matmul_exactly():
    """Random float embeddings (no exact ties, many near ones): the tiled ranks equal the ranks in
    one full similarity matrix, sorted stably, at every tiling."""
    from fuse.eval.rank import ranks_of_best_positive

    g = torch.Generator().manual_seed(5)
    c = torch.nn.functional.normalize(torch.randn(1500, 16, generator=g), dim=-1)
    q = torch.nn.functional.normalize(c[:500] + 3.0 * torch.randn(500, 16, generator=g), dim=-1)
    pos = torch.cat([torch.arange(500).repeat(2, 1).T,
                     torch.stack([torch.arange(500), torch.randint(0, 1500, (500,), generator=g)], 1)])
    full = q @ c.T
    order = full.sort(dim=1, descending=True, stable=True).indices
    is_pos = torch.zeros(500, 1500, dtype=torch.bool)
    is_pos[pos[:, 0], pos[:, 1]] = True
    want = is_pos.gather(1, order).float().argmax(1) + 1
    for query_tile, chunk in ((64, 256), (500, 1500), (37, 1000)):
        assert torch.equal(ranks_of_best_positive(q, c, pos, chunk_size=chunk, query_tile=query_tile), want)


def test_rows_whose_estimate_rounds_differently_are_recounted_exactly(monkeypatch):
    """If the first estimate of the best positive differs from the tiles' scores (here: plain dot
    products, which round differently from a matmul most of the time), the pass repairs those rows."""
    import fuse.eval.rank as rank

    monkeypatch.setattr(rank, "_positive_scores", lambda q, c, qi, ci: (q[qi] * c[ci]).sum(-1))
    g = torch.Generator().manual_seed(6)
    c = torch.nn.functional.normalize(torch.randn(800, 64, generator=g), dim=-1)
    q = torch.nn.functional.normalize(c[:300] + 2.0 * torch.randn(300, 64, generator=g), dim=-1)
    pos = torch.cat([torch.arange(300).repeat(2, 1).T,
                     torch.stack([torch.arange(300), torch.randint(0, 800, (300,), generator=g)], 1)])
    order = (q @ c.T).sort(dim=1, descending=True, stable=True).indices
    is_pos = torch.zeros(300, 800, dtype=torch.bool)
    is_pos[pos[:, 0], pos[:, 1]] = True
    want = is_pos.gather(1, order).float().argmax(1) + 1
    assert torch.equal(rank.ranks_of_best_positive(q, c, pos, chunk_size=128, query_tile=100), want)
