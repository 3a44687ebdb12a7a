"""Memory and time of the paper recipes at 1M, 5M and 50M pairs: arithmetic, not measurements.

    python benchmarks/scale_arithmetic.py      # prints the table of docs/scale.md, writes results/scale_arithmetic.json

Every number is derived from the stated assumptions below (the recipes' shapes, fp32 latents
and fp16 tokens as fuse caches them, AdamW, an H100's peak rates at a stated utilisation); none
was measured on a GPU. Change an assumption here and the table follows.
"""

from __future__ import annotations

import json
from pathlib import Path

GB = 1e9
# H100 SXM peak rates (dense) and the fraction of peak we assume a run reaches.
PEAK = {"fp32": 67e12, "tf32": 495e12, "bf16": 990e12}
UTIL = 0.4
JPEG_BYTES = 20_000          # a 256-px img2dataset JPEG; captions add ~100 bytes
DECODE_S = 0.003             # one JPEG decoded and resized on one CPU core

FUSEMIX_PARAMS = (4 * 8 * 1536**2 + 1536 * 512) + (4 * 8 * 1024**2 + 1024 * 512)  # residual MLPs, depth 4, x4
DISTILL_BLOCK = 7.1e6  # one transformer block of width 768 shared by both towers

RECIPES = {
    # cache_bytes: what the latent cache holds per pair (fp32 latents, fp16 tokens), as fuse caches them.
    # params: trained weights. act_bytes: activations kept for backward per pair (a residual-MLP block
    # of width d keeps ~11 d floats; a transformer block ~34 d floats per token plus its attention maps).
    # train_flop: per pair, forward + backward (6 x params per row the weights touch).
    # encode_gflop: the frozen encoders' forward per pair (one-time, bf16).
    "fusemix_vision_text": dict(
        cache_bytes=(1536 + 1024) * 4, params=FUSEMIX_PARAMS, act_bytes=11 * 4 * (1536 + 1024) * 4,
        train_flop=6 * FUSEMIX_PARAMS, embed=512, batch=40960, epochs=500, precision="fp32",
        encode_gflop=2 * 1.1e9 * 257 / 1e9 + 2 * 335e6 * 77 / 1e9),
    "freeze_align": dict(
        cache_bytes=(1024 + 1024) * 4, params=2 * 1024 * 256, act_bytes=(1024 + 1024) * 4,
        train_flop=6 * 2 * 1024 * 256, embed=256, batch=4096, epochs=15, precision="tf32",
        encode_gflop=2 * 304e6 * 257 / 1e9 + 2 * 355e6 * 77 / 1e9),
    "shared_encoder_distill": dict(
        cache_bytes=(197 + 64) * 768 * 2 + 768 * 4, params=DISTILL_BLOCK + 2 * 768 * 768,
        act_bytes=(34 * 768 * 4 * (197 + 64)) + 12 * 8 * (197**2 + 64**2),
        train_flop=6 * DISTILL_BLOCK * (197 + 64), embed=768, batch=256, epochs=7, precision="tf32",
        encode_gflop=2 * 43e6 * 197 / 1e9 + 2 * 43e6 * 64 / 1e9 + 2 * 86e6 * 197 / 1e9),
}


def estimate(name: str, r: dict, pairs: int) -> dict:
    steps = pairs // r["batch"]
    # Training memory on one GPU: the latent table (fuse keeps a copy on each device today), weights +
    # grads + two AdamW moments (16 B/param), activations, and the B x B logits (x3 with backward).
    # On 8 GPUs a rank holds B/8 rows' activations and a (B/8) x B slice of the logits.
    state = lambda world: (16 * r["params"] + r["act_bytes"] * r["batch"] / world  # noqa: E731
                           + 3 * 4 * r["batch"] ** 2 / world) / GB
    flops_epoch = pairs * r["train_flop"] + steps * 6 * r["batch"] ** 2 * r["embed"]
    epoch_s = flops_epoch / (PEAK[r["precision"]] * UTIL)
    encode_s = pairs * r["encode_gflop"] * 1e9 / (PEAK["bf16"] * UTIL)
    g = lambda x: float(f"{x:.3g}")  # noqa: E731  (three significant digits: this is arithmetic)
    return {"recipe": name, "pairs": pairs, "cache_GB": g(pairs * r["cache_bytes"] / GB),
            "shards_GB": g(pairs * (JPEG_BYTES + 100) / GB), "state_GB_1gpu": g(state(1)), "state_GB_8gpu": g(state(8)),
            "encode_gpu_h": g(encode_s / 3600), "decode_cpu_core_h": g(pairs * DECODE_S / 3600),
            "epoch_gpu_s": g(epoch_s), "train_gpu_h": g(epoch_s * r["epochs"] / 3600)}


def main() -> None:
    rows = [estimate(n, r, p) for n, r in RECIPES.items() for p in (1_000_000, 5_000_000, 50_000_000)]
    cols = list(rows[0])
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row[c]) for c in cols))
    out = Path(__file__).parent / "results" / "scale_arithmetic.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"assumptions": {"peak": PEAK, "utilisation": UTIL, "jpeg_bytes": JPEG_BYTES,
                                               "decode_s": DECODE_S}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
