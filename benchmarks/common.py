"""What every benchmark prints and records: threads, machine load, medians of interleaved runs."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SMOKE = False   # set by parse(): tiny sizes, nothing written


def parse(parser, **smoke):
    """Parse the command line. ``--smoke`` swaps in the tiny sizes ``smoke``, forces the CPU and writes
    no result file: seconds per benchmark, offline, so the test suite runs every one and none rots."""
    global SMOKE
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes on the CPU, a few seconds, no result file (tests/test_benchmarks.py runs it)")
    args = parser.parse_args()
    if args.smoke:
        SMOKE = True
        for key, value in smoke.items():
            setattr(args, key, value)
        if hasattr(args, "device"):
            args.device = "cpu"
    return args


def machine() -> dict:
    """Threads torch uses, CPU count and the 1/5/15-minute load average, right now."""
    return {"torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "load": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "machine": platform.machine()}


def context() -> str:
    """One line to print next to every ratio."""
    m = machine()
    return f"[{m['torch_threads']} threads of {m['cpus']} CPUs, load {m['load'][0]:.2f}]"


def sync(device) -> None:
    """Wait for the device (CUDA runs asynchronously) before reading the clock."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict, repeat: int, device="cpu", warmup: bool = True) -> dict[str, list[float]]:
    """Seconds of each function, A/B/... interleaved ``repeat`` times so load changes hit all alike."""
    if warmup:
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return times


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median over rounds of time[a] / time[b], each pair measured back to back."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def median(xs) -> float:
    return statistics.median(xs)


def matmul_peak(device="cpu", n: int = 4096, repeat: int = 7, dtype=torch.float32) -> dict:
    """Median-of-N FLOP/s of an n x n matmul (the 'peak' every efficiency is quoted against)."""
    if SMOKE:
        n, repeat = 256, 2
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    t = interleaved({"mm": lambda: torch.mm(a, b, out=out)}, repeat, device)["mm"]
    return {"n": n, "repeat": repeat, "gflops_median": 2 * n ** 3 / median(t) / 1e9,
            "gflops_best": 2 * n ** 3 / min(t) / 1e9}


def write(name: str, payload: dict) -> Path:
    """benchmarks/results/NAME.json with the machine context added (not in a smoke run)."""
    if SMOKE:
        print(f"smoke run: {name}.json not written")
        return RESULTS / f"{name}.json"
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    print(f"wrote {path}")
    return path
