"""Linear probe: fuse's L-BFGS logistic regression against scikit-learn, and key-grouped splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fuse.base.errors import DataError
from fuse.eval.probe import fit_logistic, fit_probe, split_by_key

sklearn = pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
    return x[:600], y[:600]


@pytest.mark.parametrize("C", [0.05, 1.0])
def test_probe_solves_sklearns_logistic_regression(digits, C):
    from sklearn.linear_model import LogisticRegression

    x, y = digits
    weight, bias = fit_logistic(torch.tensor(x), torch.tensor(y), 10, C)
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(x, y)
    ours = torch.softmax(torch.tensor(x) @ weight + bias, 1).numpy()
    assert np.abs(ours - ref.predict_proba(x)).max() < 1e-4  # L-BFGS stops at a max |gradient| of 1e-6
    # The penalty makes W unique (bias is only defined up to a shift shared by all classes).
    assert np.abs(weight.numpy() - ref.coef_.T).max() < 1e-3 * max(1.0, np.abs(ref.coef_).max())


def test_c_is_chosen_on_held_out_train_and_stronger_wins_ties(digits):
    x, y = digits
    probe, scores = fit_probe(torch.tensor(x), torch.tensor(y), 10, Cs=(1e-4, 0.1, 1.0), val_fraction=0.25)
    assert set(scores) == {1e-4, 0.1, 1.0}
    best = max(scores.values())
    assert probe.C == min(c for c, s in scores.items() if s == best)
    assert scores[1e-4] < scores[0.1]  # almost no fit at C=1e-4
    assert (probe.predict(torch.tensor(x)) == torch.tensor(y)).double().mean() > 0.9


def test_split_by_key_keeps_a_key_on_one_side():
    keys = [f"k{i // 3}" for i in range(30)]  # 10 keys, 3 items each
    train, test = split_by_key(keys, 0.3, seed=1)
    assert sorted(train + test) == list(range(30))
    assert {keys[i] for i in train}.isdisjoint({keys[i] for i in test})
    assert len(test) == 9
    assert split_by_key(keys, 0.3, seed=1) == (train, test)
    with pytest.raises(DataError, match="between 0 and 1"):
        split_by_key(keys, 1.0)
    with pytest.raises(DataError, match="1 distinct value"):
        split_by_key(["a"] * 5, 0.2)
