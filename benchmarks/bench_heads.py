"""How fast do heads train on cached latents? Ratios measured in one run (not a test).

1. achieved / peak matmul FLOP/s: one training step of two residual-MLP heads + InfoNCE at a
   FuseMix-like batch, against a plain square matmul on the same device;
2. device-side batching (fuse's PairBatches on cached latents) vs a naive per-sample
   DataLoader over the same latents.

    python benchmarks/bench_heads.py [--device cuda] [--batch 4096]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from fuse.batches import PairBatches
from fuse.interfaces import Step
from fuse.manifest import PairedData
from fuse.plugin_manager import registry


def timed(fn, repeat: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / repeat


def linear_flops(module: torch.nn.Module, batch: int) -> int:
    """Forward + backward FLOPs of the Linear layers: 3 x 2 x batch x in x out."""
    return sum(6 * batch * m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--pairs", type=int, default=65536)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    dims = {"image": 1280, "text": 384}
    heads = {m: registry("head").create("residual-mlp", {"depth": 2, "expansion": 4}, in_dim=d, out_dim=512).to(device)
             for m, d in dims.items()}
    obj = registry("objective").create("infonce", {}, modalities=("image", "text"), embed_dim=512).to(device)
    params = [p for h in heads.values() for p in h.parameters()] + list(obj.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    lat = {m: torch.randn(args.pairs, d, device=device) for m, d in dims.items()}
    dtype = torch.bfloat16 if device.type == "cuda" else None

    def step(idx):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            s = Step(("image", "text"), {m: lat[m][idx] for m in dims}, embed=lambda x: {m: heads[m](v) for m, v in x.items()})
            loss = obj(s)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    idx = torch.randperm(args.pairs, device=device)[:args.batch]
    t_step = timed(lambda: step(idx), 5, device)
    flops = sum(linear_flops(h, args.batch) for h in heads.values()) + 2 * 3 * 2 * args.batch * args.batch * 512
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype or torch.float32), torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    t_mm = timed(lambda: a @ b, 10, device)
    peak = 2 * n ** 3 / t_mm
    print(f"device {device}, batch {args.batch}, {'bf16' if dtype else 'fp32'}")
    print(f"head training step: {t_step * 1e3:.1f} ms, {flops / t_step / 1e9:.1f} GFLOP/s; "
          f"square matmul {n}: {peak / 1e9:.1f} GFLOP/s; achieved/peak = {flops / t_step / peak:.2f}")

    # Batching: one epoch of index batches, device-side permutation vs per-sample DataLoader.
    data = PairedData(path=None, modalities=("image", "text"), values={}, digest="",
                      n_records=args.pairs, pairs=torch.arange(args.pairs).repeat(2, 1).T.contiguous())
    ours = PairBatches(data, args.batch, online={}, device=device, seed=0)

    def epoch_ours():
        for pairs, _ in ours:
            lat["image"][pairs[:, 0]], lat["text"][pairs[:, 1]]

    naive = DataLoader(TensorDataset(lat["image"].cpu(), lat["text"].cpu()), batch_size=args.batch, shuffle=True)

    def epoch_naive():
        for x, y in naive:
            x.to(device), y.to(device)

    t_ours, t_naive = timed(epoch_ours, 3, device), timed(epoch_naive, 1, device)
    print(f"one epoch of batches over {args.pairs} cached pairs: fuse {t_ours * 1e3:.1f} ms, "
          f"per-sample DataLoader {t_naive * 1e3:.1f} ms; naive/fuse = {t_naive / t_ours:.1f}x")


if __name__ == "__main__":
    main()
