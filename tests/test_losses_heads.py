"""InfoNCE and the heads against hand-written formulas."""

from __future__ import annotations

import math

import torch

from fuse.base.interfaces import Step
from fuse.base.losses import LogitScale, info_nce
from fuse.base.plugin_manager import registry


def _reference_infonce(a, b, scale):
    """Plain-Python symmetric InfoNCE over normalised rows."""
    def norm(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    a, b = [norm(r) for r in a.tolist()], [norm(r) for r in b.tolist()]
    n = len(a)
    sim = [[scale * sum(x * y for x, y in zip(a[i], b[j])) for j in range(n)] for i in range(n)]
    def ce(rows):
        return sum(-rows[i][i] + math.log(sum(math.exp(v) for v in rows[i])) for i in range(n)) / n
    return 0.5 * (ce(sim) + ce([list(col) for col in zip(*sim)]))


def test_info_nce_matches_hand_written_formula():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    got = info_nce(a, b, torch.tensor(1 / 0.07))
    assert abs(float(got) - _reference_infonce(a, b, 1 / 0.07)) < 1e-4


def test_golden_number():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # sim a->b = [[1, .7071], [0, .7071]] at scale 1; each direction is the mean over 2 rows:
    expected = 0.25 * ((-1 + math.log(math.e + math.exp(0.70710678))) + (-0.70710678 + math.log(1 + math.exp(0.70710678)))
                      + (-1 + math.log(math.e + 1)) + (-0.70710678 + math.log(math.exp(0.70710678) * 2)))
    assert abs(float(info_nce(a, b, torch.tensor(1.0))) - expected) < 1e-6


def test_logit_scale_stays_clamped_under_huge_steps():
    scale = LogitScale(0.07, min_temperature=0.01)
    opt = torch.optim.SGD(scale.parameters(), lr=1000.0)
    for _ in range(3):
        (-scale()).backward()  # pushes the scale up as hard as possible
        opt.step()
        opt.zero_grad()
    assert float(scale().detach()) <= 100.0 + 1e-4 and scale.temperature >= 0.01 - 1e-7


def test_infonce_objective_is_registered_and_learns_temperature():
    obj = registry("objective").create("infonce", {"init_temperature": 0.1}, modalities=("image", "text"), embed_dim=4)
    assert abs(obj.metrics()["temperature"] - 0.1) < 1e-6
    lat = {"image": torch.randn(6, 4), "text": torch.randn(6, 4)}
    loss = obj.step_loss(Step(("image", "text"), lat, embed=lambda x: x))
    loss.backward()
    assert obj.scale.log_scale.grad is not None and torch.isfinite(loss)


def test_residual_mlp_head_is_x_plus_mlp_of_ln_x():
    head = registry("head").create("residual-mlp", {"depth": 1, "expansion": 2}, in_dim=6, out_dim=3)
    x = torch.randn(4, 6)
    block = head.blocks[0]
    expected_hidden = x + block.mlp(torch.nn.functional.layer_norm(x, (6,), block.norm.weight, block.norm.bias))
    expected = head.proj(head.norm(expected_hidden))
    assert torch.allclose(head(x), expected, atol=1e-6)
    assert sum(1 for m in head.modules() if isinstance(m, torch.nn.Dropout)) == 1


def test_weight_decay_skips_scalars_and_vectors():
    from fuse.training.optim import param_groups

    head = registry("head").create("residual-mlp", {"depth": 1}, in_dim=4, out_dim=2)
    obj = registry("objective").create("infonce", {}, modalities=("a", "b"), embed_dim=2)
    groups = param_groups({"heads": [head, obj]}, 1e-3, 1e-4, 0.1)
    no_decay = next(g for g in groups if g["name"] == "heads/no_decay")
    assert any(p is obj.scale.log_scale for p in no_decay["params"])
    assert all(p.ndim <= 1 for p in no_decay["params"])
