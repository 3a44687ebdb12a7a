"""Training from a memory-mapped latent store that is not held in memory.

Writes a synthetic latent store of N pairs x (1024 + 768) fp16 latents (2M pairs: 7.2 GB) under
/tmp through fuse's own LatentStore, then trains linear heads with InfoNCE for a number of steps
with the mapped path forced: PairStream gathers each batch's rows from the mapped shards in a
prefetch thread (what `data.latents_on_device: false` does in `fuse train`). Reports the step
time, how long the step waited for its batch, and peak RSS split into anonymous memory
(RssAnon: Python objects, the index, tensors) and file-backed memory (RssFile: mapped shard
pages, which the kernel can drop), against the size of the store.

    nice python benchmarks/bench_mapped.py --pairs 2000000 --steps 200 --batch 4096
    python benchmarks/bench_mapped.py --pairs 20000 --steps 20        # a quick check

The store is deleted afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import context, machine, parse, write  # noqa: E402

from fuse.base.losses import LogitScale, info_nce
from fuse.data.manifest import PairedData
from fuse.data.store import LatentStore, value_key
from fuse.training.batches import PairStream, StreamOptions
from fuse.training.step import as_input

DIMS = {"image": 1024, "text": 768}


def rss() -> dict[str, int]:
    """This process's resident memory by kind, in bytes (from /proc/self/status)."""
    out = {}
    for line in open("/proc/self/status"):
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            out[key] = int(rest.split()[0]) * 1024
    return out


class PeakSampler(threading.Thread):
    """Samples RssAnon and RssFile every 20 ms and keeps each one's peak."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.stop = {"RssAnon": 0, "RssFile": 0}, threading.Event()

    def run(self):
        while not self.stop.is_set():
            now = rss()
            for k in self.peak:
                self.peak[k] = max(self.peak[k], now[k])
            time.sleep(0.02)


def write_store(root: Path, n: int, shard_rows: int) -> dict[str, list[str]]:
    """Synthetic fp16 latents, one store per modality, written shard by shard (bounded memory)."""
    keys = {}
    gen = torch.Generator().manual_seed(0)
    for m, dim in DIMS.items():
        store = LatentStore(root / m, {"synthetic": m, "dim": dim})
        keys[m] = [value_key(f"{m}-{i}") for i in range(n)]
        for s in range(0, n, shard_rows):
            rows = min(shard_rows, n - s)
            store.write_shard("r0of1", keys[m][s:s + rows], {"latents": torch.randn(rows, dim, generator=gen).half()})
    return keys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2_000_000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--shard-rows", type=int, default=65536)
    ap.add_argument("--root", default="/tmp/bench-mapped-store")
    ap.add_argument("--keep", action="store_true")
    args = parse(ap, pairs=2000, steps=4, batch=64, shard_rows=512, root="/tmp/bench-mapped-smoke")
    root = Path(args.root)
    t0 = time.perf_counter()
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        keys = write_store(root, args.pairs, args.shard_rows)
        (root / "done").write_text("")
    else:
        keys = {m: [value_key(f"{m}-{i}") for i in range(args.pairs)] for m in DIMS}
    write_s = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in root.rglob("*.safetensors"))
    print(f"store: {size / 1e9:.2f} GB in {len(list(root.rglob('*.safetensors')))} shards ({write_s:.0f} s to write "
          f"or index)")

    baseline = rss()  # before any store is opened: the interpreter, torch and its mapped libraries
    sampler = PeakSampler()
    sampler.start()
    t0 = time.perf_counter()
    tables = {}
    for m in DIMS:
        store = LatentStore(root / m, {})
        store.refresh()
        tables[m], problems = store.table(keys[m], tokens=False)
        assert not problems, problems
    open_s = time.perf_counter() - t0  # reading records, indexing 2 x N keys, hashing every shard once
    del keys
    print(f"opened and verified in {open_s:.0f} s; RSS now {rss()}")

    device = torch.device("cpu")
    pairs = torch.arange(args.pairs).repeat(2, 1).T.contiguous()
    data = PairedData(root, ("image", "text"), {}, pairs, "", args.pairs)
    stream = PairStream(data, pairs, {}, device, StreamOptions(batch_size=args.batch, seed=0),
                        mapped={("latents", "image"): (tables["image"], 0), ("latents", "text"): (tables["text"], 1)})
    torch.manual_seed(0)
    heads = torch.nn.ModuleDict({m: torch.nn.Linear(d, 256) for m, d in DIMS.items()})
    scale = LogitScale()
    opt = torch.optim.AdamW([*heads.parameters(), *scale.parameters()], lr=1e-3)
    batches = stream.iterate(0)
    waits, steps = [], []
    for step in range(args.steps):
        t_step = time.perf_counter()
        _, _, gathered = next(batches)
        waits.append(time.perf_counter() - t_step)
        z = {m: heads[m](as_input(gathered["latents", m], device)) for m in DIMS}
        loss = info_nce(z["image"], z["text"], scale())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps.append(time.perf_counter() - t_step)
    batches.close()
    sampler.stop.set()
    sampler.join()
    skip = min(5, args.steps // 4)  # the first steps fill the prefetch queue
    steady, wait = steps[skip:], waits[skip:]
    result = {
        "pairs": args.pairs, "batch": args.batch, "steps": args.steps, "store_bytes": size,
        "step_s_median": sorted(steady)[len(steady) // 2], "step_s_mean": sum(steady) / len(steady),
        "wait_s_mean": sum(wait) / len(wait), "open_s": open_s, "write_s": write_s,
        "peak_rss_anon": sampler.peak["RssAnon"], "peak_rss_file": sampler.peak["RssFile"],
        "loss_last": loss.item(), "baseline_rss": baseline, "machine": machine(),
    }
    print(f"step {result['step_s_median'] * 1e3:.0f} ms median ({result['wait_s_mean'] * 1e3:.0f} ms of it waiting "
          f"for the batch), batch {args.batch}; peak RssAnon {result['peak_rss_anon'] / 1e9:.2f} GB, peak RssFile "
          f"{result['peak_rss_file'] / 1e9:.2f} GB, store {size / 1e9:.2f} GB (before opening it: RssAnon "
          f"{baseline['RssAnon'] / 1e9:.2f} GB, RssFile {baseline['RssFile'] / 1e9:.2f} GB) {context()}")
    write(f"bench_mapped_{args.pairs}", result)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
