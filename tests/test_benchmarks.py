"""Every benchmark still runs: each `benchmarks/bench_*.py --smoke` (tiny sizes, CPU, offline, no
result file) exits 0 and prints its result lines, each stamped with threads and load by
benchmarks/common.context()."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each in its own process: 7-100 s each, 346 s for all on the busy 2-core machine

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("bench_*.py"))
RESULT_LINE = re.compile(r"\[\d+ threads of \d+ CPUs, load \d+\.\d+\]$", re.M)


def test_every_benchmark_has_a_smoke_mode_and_every_documented_one_exists():
    """What test_benchmark_smoke_run relies on: each bench_*.py takes --smoke; and what the docs name exists."""
    root = Path(__file__).resolve().parents[1]
    assert BENCHMARKS
    smoke = re.compile(r'"--smoke"|\bparse\(\w+,')  # its own flag, or benchmarks/common.parse's
    assert [b.name for b in BENCHMARKS if not smoke.search(b.read_text())] == []
    named = {m for doc in [root / "README.md", *(root / "docs").glob("*.md")]
             for m in re.findall(r"benchmarks/([\w.-]+\.py)", doc.read_text())}
    assert named and sorted(n for n in named if not (root / "benchmarks" / n).is_file()) == []


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_smoke_run(script):
    results = script.parent / "results"
    before = {p: p.stat().st_mtime_ns for p in results.glob("*.json")}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, str(script), "--smoke"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert RESULT_LINE.search(run.stdout), f"{script.name} printed no result line:\n{run.stdout[-2000:]}"
    assert "not written" in run.stdout
    assert {p: p.stat().st_mtime_ns for p in results.glob("*.json")} == before, "a smoke run wrote a result file"
