"""The lean training step (fused AdamW everywhere, gradient norm only when needed) trains exactly
like the plain one: unfused AdamW, norm computed and read back every step."""

from __future__ import annotations

import pytest
import torch

from fuse.base.interfaces import Step
from fuse.base.plugin_manager import registry
from fuse.training.optim import make_optimizer, param_groups, warmup_cosine
from fuse.training.precision import Precision


def _setup(seed=0):
    torch.manual_seed(seed)
    heads = torch.nn.ModuleDict({m: registry("head").create("residual-mlp", {"depth": 2}, in_dim=d, out_dim=32)
                                 for m, d in (("image", 48), ("text", 24))})
    obj = registry("objective").create("infonce", {}, modalities=("image", "text"), embed_dim=32)
    groups = param_groups({"heads": [heads, obj]}, lr=3e-3, encoder_lr=0.0, weight_decay=0.1)
    g = torch.Generator().manual_seed(1)
    lat = {"image": torch.randn(256, 48, generator=g), "text": torch.randn(256, 24, generator=g)}
    return heads, obj, groups, lat


def _train(lean: bool, clip: float | None, steps: int = 8):
    heads, obj, groups, lat = _setup()
    if lean:
        opt = make_optimizer(groups, (0.9, 0.98), 1e-6)
    else:
        opt = torch.optim.AdamW(groups, betas=(0.9, 0.98), eps=1e-6, foreach=False, fused=False)
    sched = warmup_cosine(opt, 2, steps)
    params = [p for g in groups for p in g["params"]]
    precision, norms = Precision("fp32", torch.device("cpu")), []
    heads.train()
    for i in range(steps):
        torch.manual_seed(100 + i)  # same dropout masks in both runs
        rows = torch.randperm(256)[:64]
        step = Step(("image", "text"), {m: lat[m][rows] for m in lat},
                    embed=lambda x: {m: heads[m](v) for m, v in x.items()})
        loss = obj(step, obj.draw(step))
        precision.backward(loss)
        if lean:
            norm = precision.step(opt, params, clip, norm=i % 4 == 0)
            norms.append(None if norm is None else float(norm))
        else:  # fuse before the lean step: a norm every step, read back at once
            norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
            opt.step()
            opt.zero_grad(set_to_none=True)
            norms.append(float(norm))
        sched.step()
    return torch.cat([p.detach().flatten() for p in params]), norms, opt


@pytest.mark.parametrize("clip", [None, 0.5])
def test_lean_step_trains_like_the_plain_step(clip):
    plain, plain_norms, _ = _train(lean=False, clip=clip)
    lean, lean_norms, opt = _train(lean=True, clip=clip)
    assert opt.defaults["fused"] is True  # fused AdamW on the CPU too
    assert torch.allclose(lean, plain, rtol=1e-5, atol=1e-6), (lean - plain).abs().max()
    for i, (a, b) in enumerate(zip(lean_norms, plain_norms)):
        if clip or i % 4 == 0:  # the norm is there when clipping or asked for, and right
            assert a == pytest.approx(b, rel=1e-5)
        else:
            assert a is None


def test_step_without_clipping_or_logging_computes_no_norm():
    heads, obj, groups, lat = _setup()
    opt = make_optimizer(groups, (0.9, 0.98), 1e-6)
    params = [p for g in groups for p in g["params"]]
    for p in params:
        p.grad = torch.ones_like(p)
    out = Precision("fp32", torch.device("cpu")).step(opt, params, None, norm=False)
    assert out is None and all(p.grad is None for p in params)
