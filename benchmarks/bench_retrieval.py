"""Retrieval ranks vs the plain chunked matmul (and the pre-tiling kernel): time and working memory.

    python benchmarks/bench_retrieval.py [--queries 20000] [--candidates 100000] [--dim 256]
        [--repeat 3] [--no-legacy] [--memory-only]

The plain chunked matmul multiplies the same tiles into one reused buffer and does nothing
else: no kernel that reads every score can beat it, so time/matmul is the overhead of ranking.
Runs are interleaved (matmul, fuse, legacy, matmul, ...) and ratios are medians of per-round
ratios. Working memory is measured in a child process per kernel (CPU: peak RSS above the
embeddings, /proc/self/clear_refs resets the peak; CUDA: max_memory_allocated).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import context, interleaved, machine, median, parse, ratio, write  # noqa: E402

from fuse.eval.rank import CHUNK, QUERY_TILE, ranks_of_best_positive  # noqa: E402


def data(nq, nc, dim, device):
    """Candidates, noisy copies of candidate i % nc as query i, and each query's positive i <-> i % nc."""
    g = torch.Generator().manual_seed(0)
    c = torch.nn.functional.normalize(torch.randn(nc, dim, generator=g), dim=-1).to(device)
    of = torch.arange(nq, device=device) % nc
    q = torch.nn.functional.normalize(c[of] + 0.5 * torch.randn(nq, dim, generator=g).to(device), dim=-1)
    return q, c, torch.stack([torch.arange(nq, device=device), of], 1)


def plain_matmul(q, c, query_tile=QUERY_TILE, chunk=CHUNK):
    """Every score computed once, into one reused buffer, and thrown away."""
    buf = torch.empty(min(q.shape[0], query_tile) * min(c.shape[0], chunk), device=q.device)
    for qs in range(0, q.shape[0], query_tile):
        for cs in range(0, c.shape[0], chunk):
            m, n = min(query_tile, q.shape[0] - qs), min(chunk, c.shape[0] - cs)
            torch.mm(q[qs:qs + m], c[cs:cs + n].T, out=buf[:m * n].view(m, n))


def legacy(q, c, pos):
    from legacy_retrieval import ranks_of_best_positive as old
    return old(q, c, pos, 4096)


KERNELS = {"matmul": lambda q, c, p: plain_matmul(q, c), "fuse": ranks_of_best_positive, "legacy": legacy}


def _rss() -> tuple[int, int]:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]) * 1024, int(status["VmHWM"].split()[0]) * 1024


def memory_child(args):
    """Run one kernel once and print its working memory beyond the embeddings (bytes) as JSON."""
    device = torch.device(args.device)
    q, c, pos = data(args.queries, args.candidates, args.dim, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        KERNELS[args.memory_kernel](q, c, pos)
        torch.cuda.synchronize()
        used = torch.cuda.max_memory_allocated() - base
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
        base, _ = _rss()
        KERNELS[args.memory_kernel](q, c, pos)
        used = _rss()[1] - base
    print(json.dumps({"kernel": args.memory_kernel, "bytes": used}))


def memory(kernel, args) -> int:
    cmd = [sys.executable, __file__, "--queries", str(args.queries), "--candidates", str(args.candidates),
           "--dim", str(args.mem_dim or args.dim), "--device", args.device, "--memory-kernel", kernel] \
        + (["--smoke"] if args.smoke else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)["bytes"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--queries", type=int, default=20000)
    p.add_argument("--candidates", type=int, default=100000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-legacy", action="store_true", help="skip the pre-tiling kernel (slow, memory grows)")
    p.add_argument("--memory-only", action="store_true")
    p.add_argument("--mem-dim", type=int, help="embedding size for the memory runs (working memory does not depend on it)")
    p.add_argument("--memory-kernel", help=argparse.SUPPRESS)
    args = parse(p, queries=200, candidates=1000, dim=16, repeat=1)
    if args.memory_kernel:
        return memory_child(args)
    device = torch.device(args.device)
    names = ["matmul", "fuse"] + ([] if args.no_legacy else ["legacy"])
    size = f"{args.queries} x {args.candidates}, D {args.dim}"
    result = {"queries": args.queries, "candidates": args.candidates, "dim": args.dim,
              "query_tile": QUERY_TILE, "chunk": CHUNK, "device": str(device)}
    if not args.memory_only:
        q, c, pos = data(args.queries, args.candidates, args.dim, device)
        ranks = ranks_of_best_positive(q, c, pos)
        if "legacy" in names:
            assert torch.equal(ranks.cpu(), legacy(q, c, pos)), "fuse and the legacy kernel disagree"
        times = interleaved({n: (lambda n=n: KERNELS[n](q, c, pos)) for n in names}, args.repeat, device, warmup=False)
        result["seconds"] = times
        result["fuse_over_matmul"] = ratio(times, "fuse", "matmul")
        gflops = 2 * args.queries * args.candidates * args.dim / median(times["matmul"]) / 1e9
        result["matmul_gflops"] = gflops
        print(f"{size}: fuse/matmul = {result['fuse_over_matmul']:.2f}x (matmul {median(times['matmul']):.1f} s, "
              f"{gflops:.0f} GFLOP/s) {context()}")
        if "legacy" in names:
            result["legacy_over_matmul"] = ratio(times, "legacy", "matmul")
            result["legacy_over_fuse"] = ratio(times, "legacy", "fuse")
            print(f"{size}: legacy/matmul = {result['legacy_over_matmul']:.2f}x, legacy/fuse = "
                  f"{result['legacy_over_fuse']:.2f}x {context()}")
        del q, c, pos
    result["memory_dim"] = args.mem_dim or args.dim
    result["memory_bytes"] = {n: memory(n, args) for n in names}
    print(f"{args.queries} x {args.candidates}: working memory beyond the embeddings: " + ", ".join(
        f"{n} {b / 2**30:.2f} GiB" for n, b in result["memory_bytes"].items()) + f" {context()}")
    result["machine_after"] = machine()
    write(f"bench_retrieval_{args.queries}x{args.candidates}", result)


if __name__ == "__main__":
    main()
