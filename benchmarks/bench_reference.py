"""FuseMix: fuse's training loop vs a faithful re-implementation of the reference loop, on the
same latents, with the same heads, loss, optimiser settings and batch (not a test).

    python benchmarks/bench_reference.py [--pairs 3189 100000] [--steps 24] [--repeat 3]

The reference loop (layer6ai-labs/fusemix, as the speed issue describes it): a Dataset over a
dict of latent tensors, a shuffling DataLoader with the default collate (one tensor per sample,
stacked per batch), lambda from numpy's Beta, the batch's halves mixed, the heads, symmetric
InfoNCE with a raw clamped temperature, AdamW (torch's default implementation), and
``loss.item()`` every step. fuse's loop: PairStream's device-side index batches into latent
tables, StepModule + the fusemix objective, Precision and fused AdamW from fuse.training.optim, the loss
read only at logging steps (every 10). Both run ``--steps`` steps per window, interleaved;
the ratio is the median of per-round ratios. A profile of each (torch.profiler, labelled
phases) shows where the time goes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import context, interleaved, machine, median, parse, ratio, write  # noqa: E402

import fuse  # noqa: E402
from fuse.base.plugin_manager import registry
from fuse.data.manifest import PairedData
from fuse.training.batches import PairStream, StreamOptions
from fuse.training.optim import make_optimizer, param_groups, warmup_cosine
from fuse.training.precision import Precision

DIMS = {"image": 1280, "text": 384}   # the quickstart's latents (EfficientNet-Lite0, MiniLM)
HEAD = {"depth": 1, "expansion": 2, "dropout": 0.5}
EMBED, BATCH, LR, WD = 256, 256, 1e-3, 0.1


def heads_and_objective(device):
    torch.manual_seed(0)
    heads = torch.nn.ModuleDict({m: registry("head").create("residual-mlp", HEAD, in_dim=d, out_dim=EMBED)
                                 for m, d in DIMS.items()}).to(device)
    obj = registry("objective").create("fusemix", {"alpha": 1.0}, modalities=("image", "text"),
                                       embed_dim=EMBED).to(device)
    return heads, obj


class LatentDict(Dataset):
    """The reference's dataset: one dict of latent tensors, indexed per sample."""

    def __init__(self, latents):
        self.latents = latents

    def __len__(self):
        return next(iter(self.latents.values())).shape[0]

    def __getitem__(self, i):
        return {m: x[i] for m, x in self.latents.items()}


def reference_loop(latents, device, steps, prof=None):
    heads, obj = heads_and_objective(device)
    opt = torch.optim.AdamW(list(heads.parameters()) + list(obj.parameters()), lr=LR, weight_decay=WD)
    loader = DataLoader(LatentDict(latents), batch_size=BATCH, shuffle=True, drop_last=True)
    rng = np.random.default_rng(0)
    state = {"it": iter(loader)}

    def window():
        heads.train()
        for _ in range(steps):
            with torch.profiler.record_function("data"):
                try:
                    batch = next(state["it"])
                except StopIteration:
                    state["it"] = iter(loader)
                    batch = next(state["it"])
                x, y = batch["image"].to(device), batch["text"].to(device)
            with torch.profiler.record_function("forward"):
                lam = float(rng.beta(1.0, 1.0))
                h = x.shape[0] // 2
                x, y = lam * x[:h] + (1 - lam) * x[h:2 * h], lam * y[:h] + (1 - lam) * y[h:2 * h]
                loss = fuse.info_nce(heads["image"](x), heads["text"](y), obj.scale())
            with torch.profiler.record_function("backward"):
                opt.zero_grad()
                loss.backward()
            with torch.profiler.record_function("optimizer"):
                opt.step()
            with torch.profiler.record_function("read loss"):
                loss.item()
    return window


def pair_rows(data, device):
    """Endless [B, 2] batches of row indices from fuse's PairStream: the benchmark's one use of it."""
    stream = PairStream(data, data.pairs, {}, device, StreamOptions(batch_size=BATCH, seed=0))
    return (rows for rows, _online, _mapped in stream.iterate())


def fuse_loop(latents, device, steps, log_every=10, compile_heads=False, backend="inductor"):
    heads, obj = heads_and_objective(device)
    run_heads = {m: torch.compile(h, backend=backend) for m, h in heads.items()} if compile_heads else heads
    n = next(iter(latents.values())).shape[0]
    data = PairedData(path=None, modalities=("image", "text"), values={}, digest="", n_records=n,
                      pairs=torch.arange(n).repeat(2, 1).T.contiguous())
    stream = pair_rows(data, device)
    groups = param_groups({"heads": [heads, obj]}, LR, LR / 10, WD)
    opt = make_optimizer(groups, (0.9, 0.999), 1e-8)
    sched = warmup_cosine(opt, 0, 10**6)
    precision = Precision("auto", device)
    params = [p for g in groups for p in g["params"]]
    tables = {m: x.to(device) for m, x in latents.items()}
    state = {"step": 0}

    def window():
        heads.train()
        for _ in range(steps):
            with torch.profiler.record_function("data"):
                rows = next(stream)
                step = fuse.Step(("image", "text"), {m: tables[m][rows[:, c]] for c, m in enumerate(DIMS)},
                                 embed=lambda z: {m: run_heads[m](v) for m, v in z.items()})
            with torch.profiler.record_function("forward"):
                with precision.autocast():
                    loss = obj(step, obj.draw(step))
            with torch.profiler.record_function("backward"):
                precision.backward(loss)
            state["step"] += 1
            logging = state["step"] % log_every == 0
            with torch.profiler.record_function("optimizer"):
                norm = precision.step(opt, params, None, norm=logging)
                sched.step()
            if logging:
                with torch.profiler.record_function("read loss"):
                    loss.item(), float(norm)
    return window


def profile(window) -> dict[str, float]:
    """Seconds per labelled phase (and the top operators) over one window."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        window()
    events = prof.key_averages()
    phases = {e.key: e.cpu_time_total / 1e6 for e in events if e.key in ("data", "forward", "backward",
                                                                           "optimizer", "read loss")}
    ops = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)[:6]
    return {"phases_s": phases, "top_ops_self_s": {e.key: e.self_cpu_time_total / 1e6 for e in ops}}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, nargs="+", default=[3189, 100000])
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parse(p, pairs=[300], steps=1, repeat=1)
    device = torch.device(args.device)
    results = {}
    for n in args.pairs:
        g = torch.Generator().manual_seed(0)
        latents = {m: torch.randn(n, d, generator=g) for m, d in DIMS.items()}
        loops = {"reference": reference_loop(latents, device, args.steps), "fuse": fuse_loop(latents, device, args.steps)}
        times = interleaved(loops, args.repeat, device)
        r = {"seconds_per_window": times, "steps_per_window": args.steps,
             "ms_per_step": {k: median(v) / args.steps * 1e3 for k, v in times.items()},
             "reference_over_fuse": ratio(times, "reference", "fuse"),
             "profile": {k: profile(w) for k, w in loops.items()}, "machine": machine()}
        results[str(n)] = r
        print(f"{n} pairs, batch {BATCH}: reference {r['ms_per_step']['reference']:.0f} ms/step, fuse "
              f"{r['ms_per_step']['fuse']:.0f} ms/step; reference/fuse = {r['reference_over_fuse']:.2f}x {context()}")
        for k in loops:
            ph = r["profile"][k]["phases_s"]
            total = sum(ph.values())
            print(f"  {k:9s} where the time goes: " + ", ".join(f"{name} {s / total:.0%}" for name, s in ph.items()))
    write("bench_reference", {"device": str(device), "batch": BATCH, "heads": HEAD, "dims": DIMS, "results": results})


if __name__ == "__main__":
    main()
