"""The real head training step on cached latents: achieved FLOP/s against a median-of-N matmul
peak, and the lean step (fused AdamW, no per-step norm or read-back) against the step before it.

    python benchmarks/bench_heads.py [--batch 256] [--steps 30] [--repeat 5] [--device cpu]

The step is the quickstart's (recipes/quickstart.yaml): residual-MLP heads (depth 1, expansion
2, dropout 0.5) from EfficientNet-Lite0 (1280) and MiniLM (384) latents to 256, InfoNCE with a
learned temperature, AdamW with weight decay groups, warmup + cosine schedule, built from
fuse's own registry, optimiser, schedule and Precision. FLOPs per step are counted by torch
(``torch.utils.flop_counter.FlopCounterMode`` over one whole step) and checked against the
analytic count: every Linear 2*B*in*out forward + 4*B*in*out backward (weight and input
gradients; even the first Linear's input needs its gradient, for the LayerNorm before it), and
the similarity matrix 2*B^2*D forward + 4*B^2*D backward = 6*B^2*D.
Variants run interleaved, one window of ``--steps`` steps each per round; ratios are medians.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import context, interleaved, matmul_peak, median, parse, ratio, write  # noqa: E402

from fuse.base.interfaces import Step
from fuse.base.plugin_manager import registry
from fuse.training.optim import make_optimizer, param_groups, warmup_cosine
from fuse.training.precision import Precision

DIMS = {"image": 1280, "text": 384}
HEAD = {"depth": 1, "expansion": 2, "dropout": 0.5}


def analytic_flops(heads, batch: int, embed_dim: int) -> int:
    """The step's matmul FLOPs from the layer shapes (see the module docstring)."""
    flops = 6 * batch * batch * embed_dim
    for head in heads.values():
        flops += sum(6 * batch * m.in_features * m.out_features for m in head.modules()
                     if isinstance(m, torch.nn.Linear))
    return flops


def counted_flops(one_step) -> int:
    """FLOPs torch counts in one whole step (forward, backward, optimiser), by operator."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        one_step()
    return counter.get_total_flops()


def build(variant: str, device, batch: int, pairs: int, embed_dim: int = 256, log_every: int = 10):
    """One training window for a variant: 'lean' (fuse now) or 'before' (unfused AdamW, gradient
    norm computed and read back every step, as fuse did before the speed issue)."""
    torch.manual_seed(0)
    heads = torch.nn.ModuleDict({m: registry("head").create("residual-mlp", HEAD, in_dim=d, out_dim=embed_dim)
                                 for m, d in DIMS.items()}).to(device)
    obj = registry("objective").create("infonce", {"init_temperature": 0.07}, modalities=("image", "text"),
                                       embed_dim=embed_dim).to(device)
    groups = param_groups({"heads": [heads, obj]}, 1e-3, 1e-4, 0.1)
    if variant == "lean":
        opt = make_optimizer(groups, (0.9, 0.999), 1e-8)
    else:
        opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8, fused=None)
    sched = warmup_cosine(opt, 20, 10**6)
    precision = Precision("auto", torch.device(device))
    params = [p for g in groups for p in g["params"]]
    g = torch.Generator(device=device).manual_seed(1)
    lat = {m: torch.randn(pairs, d, device=device, generator=g) for m, d in DIMS.items()}
    state = {"step": 0}

    def one_step():
        rows = torch.randint(0, pairs, (batch,), device=device, generator=g)
        with precision.autocast():
            step = Step(("image", "text"), {m: lat[m][rows] for m in DIMS},
                        embed=lambda x: {m: heads[m](v) for m, v in x.items()})
            loss = obj(step, obj.draw(step))
        precision.backward(loss)
        state["step"] += 1
        logging = state["step"] % log_every == 0
        if variant == "lean":
            norm = precision.step(opt, params, None, norm=logging)
            if logging:
                float(loss.item()), float(norm)
        else:
            norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
            opt.step()
            opt.zero_grad(set_to_none=True)
            float(norm)
            if logging:
                loss.item()
        sched.step()

    return heads, one_step


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--pairs", type=int, default=3189)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeat", type=int, default=5)
    args = parse(p, batch=32, pairs=64, steps=2, repeat=1)
    device = torch.device(args.device)
    steps = {}
    for variant in ("before", "lean"):
        heads, one = build(variant, device, args.batch, args.pairs)
        steps[variant] = (lambda one=one: [one() for _ in range(args.steps)])
    flops = counted_flops(one)
    analytic = analytic_flops(heads, args.batch, 256)
    assert abs(flops - analytic) <= 0.01 * analytic, f"torch counts {flops} FLOPs per step, the shapes give {analytic}"
    peak = matmul_peak(device)
    times = interleaved(steps, args.repeat, device)
    peak_after = matmul_peak(device)
    per_step = {v: median(t) / args.steps for v, t in times.items()}
    result = {"batch": args.batch, "steps_per_window": args.steps, "repeat": args.repeat, "flops_per_step": flops,
              "flops_counted_by": "torch.utils.flop_counter.FlopCounterMode", "flops_analytic": analytic,
              "peak_before": peak, "peak_after": peak_after, "seconds_per_window": times,
              "ms_per_step": {v: s * 1e3 for v, s in per_step.items()},
              "gflops": {v: flops / s / 1e9 for v, s in per_step.items()},
              "before_over_lean": ratio(times, "before", "lean")}
    pk = (peak["gflops_median"] + peak_after["gflops_median"]) / 2
    result["of_peak"] = {v: g / pk for v, g in result["gflops"].items()}
    print(f"device {device}, batch {args.batch}, {flops / 1e9:.2f} GFLOP per step; matmul peak ({peak['n']}², median of {peak['repeat']}, "
          f"before/after) {peak['gflops_median']:.0f}/{peak_after['gflops_median']:.0f} GFLOP/s {context()}")
    for v in ("before", "lean"):
        print(f"  {v:6s}: {result['ms_per_step'][v]:.1f} ms/step, {result['gflops'][v]:.1f} GFLOP/s = "
              f"{result['of_peak'][v]:.2f} of peak")
    print(f"before/lean = {result['before_over_lean']:.2f}x {context()}")
    write("bench_heads", result)


if __name__ == "__main__":
    main()
