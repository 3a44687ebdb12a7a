"""Latent-space similarity (fuse.similarity) against independent formulas and its invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fuse.select.similarity import hsic_unbiased, linear_cka, minibatch_cka, mutual_knn, rbf_kernel


def _data(n=60, dx=5, dy=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dx, generator=g, dtype=torch.float64)
    y = x @ torch.randn(dx, dy, generator=g, dtype=torch.float64) + 0.5 * torch.randn(n, dy, generator=g,
                                                                                       dtype=torch.float64)
    return x, y


def _orthogonal(d, seed):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_linear_cka_equals_the_feature_space_formula_computed_by_hand():
    x, y = _data()
    xc, yc = (x - x.mean(0)).numpy(), (y - y.mean(0)).numpy()
    want = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(x, y) == pytest.approx(want, rel=1e-10)
    # ... and the kernel form: HSIC(XX^T, YY^T) with centring matrices H (biased estimator)
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = xc @ xc.T, yc @ yc.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    assert linear_cka(x, y) == pytest.approx(hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l)), rel=1e-10)


@pytest.mark.parametrize("cka", [linear_cka, lambda a, b: minibatch_cka(a, b, "rbf", batch_size=1000),
                                 lambda a, b: minibatch_cka(a, b, "linear", batch_size=1000)])
def test_cka_of_a_space_with_itself_is_one(cka):
    x, _ = _data()
    assert cka(x, x) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("cka", [linear_cka, lambda a, b: minibatch_cka(a, b, "rbf", batch_size=1000)])
def test_cka_is_invariant_to_rotations_and_isotropic_scaling_but_not_to_general_linear_maps(cka):
    x, y = _data()
    base = cka(x, y)
    assert cka(x @ _orthogonal(5, 1) * 3.7, y) == pytest.approx(base, rel=1e-9)
    assert cka(x, y @ _orthogonal(7, 2) * 0.2) == pytest.approx(base, rel=1e-9)
    stretch = torch.diag(torch.tensor([50.0, 1.0, 1.0, 1.0, 0.02], dtype=torch.float64)) @ _orthogonal(5, 3)
    assert abs(cka(x @ stretch, y) - base) > 0.01   # invertible, but not a similarity transform


def test_unbiased_hsic_matches_its_written_out_formula():
    x, y = _data(n=12)
    k, l = rbf_kernel(x, 2.0).numpy(), rbf_kernel(y, 3.0).numpy()
    n = 12
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    want = (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))
    assert float(hsic_unbiased(torch.from_numpy(k), torch.from_numpy(l))) == pytest.approx(want, rel=1e-10)


def test_minibatch_estimate_agrees_with_the_full_one_on_small_n():
    x, y = _data(n=600, seed=4)
    full = minibatch_cka(x, y, "rbf", batch_size=600)
    assert minibatch_cka(x, y, "rbf", batch_size=200) == pytest.approx(full, abs=0.03)
    full_lin = minibatch_cka(x, y, "linear", batch_size=600)
    assert minibatch_cka(x, y, "linear", batch_size=150) == pytest.approx(full_lin, abs=0.05)
    # unbiased and biased linear CKA agree closely at this N
    assert full_lin == pytest.approx(linear_cka(x, y), abs=0.02)


def test_unrelated_spaces_score_low_and_related_high():
    x, y = _data(n=400, seed=5)
    noise = torch.randn(400, 7, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    assert linear_cka(x, y) > 0.5 > 0.1 > linear_cka(x, noise)
    assert minibatch_cka(x, noise, "rbf", batch_size=400) < 0.05 < 0.5 < minibatch_cka(x, y, "rbf", batch_size=400)


def test_mutual_knn_on_hand_built_neighbourhoods():
    # Two tight clusters of 3 points in each space: with k=2 every point's neighbours are its
    # cluster mates, in both spaces -> overlap 1.
    a = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [0.0, 1.0], [0.1, 1.0], [-0.1, 1.0]])
    assert mutual_knn(a, a * 5, k=2) == 1.0
    # Swap which items share a cluster in the second space: items 0,1 keep each other, item 2
    # moves to the other cluster: count shared neighbours by hand.
    b = a[[0, 1, 3, 2, 4, 5]]   # item 2 <-> item 3 swap places
    # x-space neighbours: 0:{1,2} 1:{0,2} 2:{0,1} 3:{4,5} 4:{3,5} 5:{3,4}
    # y-space neighbours: 0:{1,3} 1:{0,3} 3:{0,1} 2:{4,5} 4:{2,5} 5:{2,4}
    shared = [1, 1, 0, 0, 1, 1]   # |x ∩ y| per item
    assert mutual_knn(a, b, k=2) == pytest.approx(sum(shared) / (6 * 2))


def test_bad_inputs_are_clear():
    x, y = _data()
    with pytest.raises(ValueError, match="paired rows"):
        linear_cka(x, y[:10])
    with pytest.raises(ValueError, match="k must be between 1 and N - 1"):
        mutual_knn(x, y, k=60)
    with pytest.raises(ValueError, match="at least 4 samples"):
        hsic_unbiased(torch.eye(3), torch.eye(3))
