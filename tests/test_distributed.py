"""torchrun with 2 CPU processes (gloo) takes the same step as one process on the global batch.

InfoNCE gathers embeddings across ranks with gradients and DDP averages the gradients, so
after one optimiser step the heads must match a single-process run with the same seed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe, write_recipe
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def _train(cmd, recipe):
    result = subprocess.run([*cmd, "-m", "fuse", "train", str(recipe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


def test_two_rank_step_equals_single_process_step(tmp_path, tiny_text_model, shapes_data):
    common = {"train.max_steps": 1, "train.batch_size": 8, "data.val": None, "optim.weight_decay": 0.0}
    single = write_recipe(tmp_path / "single.yaml", tiny_recipe(tmp_path / "a", tiny_text_model, shapes_data, **common))
    double = write_recipe(tmp_path / "double.yaml", tiny_recipe(tmp_path / "b", tiny_text_model, shapes_data, **common))
    _train([sys.executable], single)
    torchrun = Path(sys.executable).with_name("torchrun")
    out = _train([str(torchrun), "--nproc_per_node", "2", "--master_port", "29533"], double)
    assert out.count("batch 4x2x1") == 1  # only rank 0 prints
    a = load_file(str(tmp_path / "a" / "run" / "checkpoints" / "epoch-001.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "checkpoints" / "epoch-001.safetensors"))
    assert a.keys() == b.keys()
    # Adam's first step is lr * g / (|g| + eps): elements whose gradient is ~0 may flip sign
    # with the summation order, so compare the bulk exactly and bound the rest by 2 * lr.
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    print(f"max {diff.max():.2e}, share equal {(diff < 1e-6).float().mean():.4f}")
    assert (diff < 1e-6).float().mean() > 0.99 and diff.max() <= 2 * 3e-3 + 1e-6


RANK = """
import sys, torch, torch.distributed as dist
from pathlib import Path
from fuse.data.cache import EncodeOptions, cached_latents
from fuse.base.plugin_manager import registry
rank, world, cache, model, init = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]
if world > 1:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
enc = registry("encoder").create("hf-text", {"model": model})
values = [f"caption {i} " + "word " * (i % 5) for i in range(40)]
z = cached_latents(enc, {"name": "hf-text"}, values, cache, torch.device("cpu"),
                   EncodeOptions(batch_size=4, shard_rows=8, label=f"rank{rank}"))
torch.save(z, cache / f"z{rank}of{world}.pt")
"""


def test_two_ranks_encode_their_own_slices_into_one_store(tmp_path, tiny_text_model):
    """Each rank encodes its half into its own shards, polls for the other's, and reads the same table."""
    import json
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    init = f"file://{tmp_path / 'rendezvous'}"
    run = lambda rank, world, cache: subprocess.Popen(  # noqa: E731
        [sys.executable, "-c", RANK, str(rank), str(world), str(cache), str(tiny_text_model), init], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    procs = [run(0, 2, tmp_path / "two"), run(1, 2, tmp_path / "two")]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert "rank0: cached 20 new latents" in outs[0] and "rank1: cached 20 new latents" in outs[1]
    records = [json.loads(p.read_text()) for p in (tmp_path / "two").glob("latent-store/*/shard-*.json")]
    assert sorted(len(r["keys"]) for r in records) == [4, 4, 8, 8, 8, 8]   # 20 rows a rank, shards of 8
    from fuse.base.plugin_manager import registry
    from fuse.data.cache import EncodeOptions, cached_latents

    enc = registry("encoder").create("hf-text", {"model": str(tiny_text_model)})
    values = [f"caption {i} " + "word " * (i % 5) for i in range(40)]
    one = cached_latents(enc, {"name": "hf-text"}, values, tmp_path / "one", torch.device("cpu"),
                         EncodeOptions(batch_size=4, shard_rows=8))
    r0, r1 = (torch.load(tmp_path / "two" / f"z{r}of2.pt") for r in (0, 1))
    assert torch.equal(r0, r1)
    # Batches differ between slicings (padding to each batch's longest caption changes the last bits).
    assert torch.allclose(r0, one, rtol=0, atol=1e-5), (r0 - one).abs().max()
    print(f"2 ranks vs 1: max |diff| {(r0 - one).abs().max():.1e}")


WAITER = """
import sys, torch
from pathlib import Path
import fuse.base.collectives as d   # what the latent store asks
from fuse.data.cache import EncodeOptions, cached_latents
from fuse.base.plugin_manager import registry
d.rank, d.world_size = (lambda: 0), (lambda: 2)   # rank 0 of 2, whose peer never comes
enc = registry("encoder").create("hf-text", {"model": sys.argv[2]})
values = [f"caption {i}" for i in range(8)]
cached_latents(enc, {"name": "hf-text"}, values, Path(sys.argv[1]), torch.device("cpu"),
               EncodeOptions(batch_size=4, shard_rows=4, label="text/train", poll_s=0.05, report_s=0.5))
"""


def test_a_rank_waiting_for_a_dead_peer_says_so(tmp_path, tiny_text_model):
    """Outside torchrun nothing stops a rank whose peer died: it keeps polling, and says every
    report_s which rank's slice is missing and whether that rank is encoding (holds its lock)."""
    import os
    import time

    from fuse.base.atomic import locked

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-u", "-c", WAITER, str(tmp_path), str(tiny_text_model)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while not any("NOT encoding" in line for line in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        assert "still waiting for rank 1: 4 latents, NOT encoding. A rank that is not encoding may have died" \
            in lines[-1]
        folder = next((tmp_path / "latent-store").iterdir())
        with locked(folder / "writer-r1of2"):  # rank 1 alive and encoding after all
            deadline = time.monotonic() + 60
            while "rank 1: 4 latents, encoding." not in line and time.monotonic() < deadline:
                line = proc.stdout.readline()
        assert "rank 1: 4 latents, encoding." in line and "may have died" not in line
    finally:
        proc.kill()
        proc.wait()
