"""The latent cache key covers everything that changes latents, and the cache round-trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from fuse.cache import cache_key, cached_latents
from fuse.errors import DataError
from fuse.plugin_manager import registry


@pytest.fixture(scope="module")
def encoder(tiny_text_model):
    return registry("encoder").create("hf-text", {"model": str(tiny_text_model)})


def _spec(enc):
    return {"name": "hf-text", "options": enc.options.model_dump()}


def test_key_depends_on_options_weights_preprocessing_and_values(encoder, tiny_text_model):
    values = ["a red circle", "a blue square"]
    base = cache_key(encoder, _spec(encoder), values)
    assert cache_key(encoder, _spec(encoder), values) == base
    assert cache_key(encoder, _spec(encoder), values[::-1]) != base
    assert cache_key(encoder, {**_spec(encoder), "options": {"pooling": "cls"}}, values) != base
    other = registry("encoder").create("hf-text", {"model": str(tiny_text_model), "max_length": 8})
    assert cache_key(other, _spec(encoder), values) != base  # preprocessing signature changed
    with torch.no_grad():
        encoder.model.embeddings.word_embeddings.weight[0, 0] += 1.0
    try:
        assert cache_key(encoder, _spec(encoder), values) != base  # weights fingerprint changed
    finally:
        with torch.no_grad():
            encoder.model.embeddings.word_embeddings.weight[0, 0] -= 1.0


def test_key_changes_when_a_file_changes(tmp_path):
    from conftest import _draw

    enc = registry("encoder").create("timm", {"model": "test_efficientnet", "pretrained": False})
    p = tmp_path / "x.png"
    _draw("circle", (255, 0, 0)).save(p)
    k1 = cache_key(enc, {"name": "timm"}, [str(p)])
    _draw("square", (0, 0, 255)).save(p)
    os.utime(p, ns=(1, 1))
    assert cache_key(enc, {"name": "timm"}, [str(p)]) != k1


def test_cache_round_trip_and_self_healing(encoder, tmp_path, capsys):
    values = ["a red circle", "a blue square", "the green triangle on white"]
    # One batch size throughout: a rebuild then gives bit-identical latents (padding changes the last bits).
    first = cached_latents(encoder, _spec(encoder), values, tmp_path, torch.device("cpu"), batch_size=2, label="t")
    again = cached_latents(encoder, _spec(encoder), values, tmp_path, torch.device("cpu"), batch_size=2, label="t")
    assert torch.equal(first, again) and first.shape == (3, 32)
    assert "read 3 cached latents" in capsys.readouterr().out
    shard = next(tmp_path.rglob("shard-00000.safetensors"))
    folder = shard.parent
    # truncated, then same size but other values (hash mismatch): each is rebuilt with a message
    shard.write_bytes(shard.read_bytes()[:40])
    healed = cached_latents(encoder, _spec(encoder), values, tmp_path, torch.device("cpu"), batch_size=2, label="t")
    assert torch.equal(healed, first) and "(truncated)); rebuilding it" in capsys.readouterr().out
    save_file({"latents": torch.zeros(3, 32)}, str(shard))
    healed = cached_latents(encoder, _spec(encoder), values, tmp_path, torch.device("cpu"), batch_size=2, label="t")
    assert torch.equal(healed, first) and "does not match its recorded shape and hash" in capsys.readouterr().out
    (folder / "meta.json").write_text("{not json")
    assert torch.equal(cached_latents(encoder, _spec(encoder), values, tmp_path, torch.device("cpu"), batch_size=2, label="t"), first)
    assert "rebuilding it" in capsys.readouterr().out
    assert [p.name for p in folder.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []  # none left


def test_cache_records_finiteness_and_refuses_a_nan_shard(encoder, tmp_path):
    from fuse.cache import write_cache

    values = ["a red circle", "a blue square"]
    cached_latents(encoder, _spec(encoder), values, tmp_path, torch.device("cpu"), label="t")
    folder = next(p for p in (tmp_path / "latents").iterdir() if p.is_dir())
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["shards"][0]["finite"] is True and meta["shards"][0]["shape"] == [2, 32]
    bad = torch.ones(2, 32)
    bad[1, 3] = float("nan")
    write_cache(folder, bad, _spec(encoder), tokens=False)  # as if the encoder had given a NaN
    assert json.loads((folder / "meta.json").read_text())["shards"][0]["finite"] is False
    with pytest.raises(DataError, match="shard-00000.safetensors holds NaN/Inf latents"):
        cached_latents(encoder, _spec(encoder), values, tmp_path, torch.device("cpu"), label="t")


def test_cache_files_respect_the_umask(encoder, tmp_path):
    old = os.umask(0o022)
    try:
        cached_latents(encoder, _spec(encoder), ["a red circle"], tmp_path, torch.device("cpu"), label="t")
    finally:
        os.umask(old)
    folder = next(p for p in (tmp_path / "latents").iterdir() if p.is_dir())
    assert oct(folder.stat().st_mode & 0o777) == oct(0o755)
    for f in folder.iterdir():
        assert oct(f.stat().st_mode & 0o777) == oct(0o644), f  # safetensors alone would write 0600


CONCURRENT = """
import json, sys
from pathlib import Path
import torch
from fuse.cache import cached_latents
from fuse.datasets import build_dataset
from fuse.plugin_manager import registry
cache = Path(sys.argv[1])
splits = build_dataset("emoji", {"max_items": 12, "image_size": 16}, cache)
enc = registry("encoder").create("hf-text", {"model": sys.argv[2]})
values = [json.loads(l)["text"] for l in splits["train"].read_text().splitlines()]
z = cached_latents(enc, {"name": "hf-text", "options": enc.options.model_dump()}, values, cache, torch.device("cpu"))
print("RESULT", len(values), float(z.sum()))
"""


def test_three_processes_share_one_build(tmp_path, tiny_text_model):
    """Three processes started at once: one builds the dataset and one the latents, the others wait and read."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tmp_path), str(tiny_text_model)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    results = {line for out in outs for line in out.splitlines() if line.startswith("RESULT")}
    assert len(results) == 1, outs  # identical results
    log = "".join(outs)
    assert log.count("building into") == 1 and log.count(": cached ") == 1, log  # one build of each
    datasets = [p for p in (tmp_path / "datasets").iterdir() if not p.name.endswith(".lock")]
    assert len(datasets) == 1 and (datasets[0] / "fuse_dataset.json").exists()  # no temp folders left
