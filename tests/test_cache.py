"""The latent store: keyed on what determines latents, rows per value, resumable, shared safely."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe
from safetensors.torch import save_file

import fuse
from fuse.base.errors import DataError
from fuse.base.plugin_manager import registry
from fuse.cli import cli
from fuse.data.cache import EncodeOptions, cached_latents, encode_values, latent_identity, store_folder
from fuse.data.store import LatentStore
from fuse.recipes.export_format import resolve_relative

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def encoder(tiny_text_model):
    return registry("encoder").create("hf-text", {"model": str(tiny_text_model)})


def _counting(enc):
    """How many values the encoder has run on (a forward hook: behaviour, not a mock)."""
    seen = [0]
    enc.register_forward_hook(lambda mod, args, out: seen.__setitem__(0, seen[0] + out.shape[0]))
    return seen


@pytest.fixture
def fresh(tiny_text_model):
    """An encoder of the tiny model for one test (forward hooks stay on their own copy)."""
    return registry("encoder").create("hf-text", {"model": str(tiny_text_model)})


def _latents(enc, values, cache, **kw):
    return cached_latents(enc, {"name": "hf-text"}, values, cache, CPU, EncodeOptions(batch_size=2, label="t", **kw))


def test_identity_ignores_file_locations_not_what_changes_latents(encoder, tiny_text_model, tmp_path):
    base = store_folder(tmp_path, latent_identity(encoder, "hf-text"))
    saved = resolve_relative(encoder.save(tmp_path / "copy"), tmp_path / "copy")   # as an export does: ./ paths
    assert saved["model"] != str(tiny_text_model)
    copy = registry("encoder").create("hf-text", saved)
    assert store_folder(tmp_path, latent_identity(copy, "hf-text")) == base        # same weights elsewhere: same store
    other = registry("encoder").create("hf-text", {"model": str(tiny_text_model), "max_length": 8})
    assert store_folder(tmp_path, latent_identity(other, "hf-text")) != base       # preprocessing
    assert store_folder(tmp_path, latent_identity(encoder, "hf-text", tokens=True)) != base
    assert store_folder(tmp_path, latent_identity(encoder, "hf-text", dtype="float16")) != base
    with torch.no_grad():
        copy.model.embeddings.word_embeddings.weight[0, 0] += 1.0
    assert store_folder(tmp_path, latent_identity(copy, "hf-text")) != base        # weights


def test_a_changed_file_is_a_new_row(tmp_path):
    from conftest import _draw

    enc = registry("encoder").create("timm", {"model": "test_efficientnet", "pretrained": False})
    p = tmp_path / "x.png"
    _draw("circle", (255, 0, 0)).save(p)
    seen = _counting(enc)
    spec = {"name": "timm"}
    cached_latents(enc, spec, [str(p)], tmp_path / "c", CPU, EncodeOptions(label="t"))
    cached_latents(enc, spec, [str(p)], tmp_path / "c", CPU, EncodeOptions(label="t"))
    assert seen[0] == 1
    _draw("square", (0, 0, 255)).save(p)
    os.utime(p, ns=(1, 1))
    cached_latents(enc, spec, [str(p)], tmp_path / "c", CPU, EncodeOptions(label="t"))
    assert seen[0] == 2


def test_overlapping_value_lists_encode_only_new_values(fresh, tmp_path, capsys):
    encoder = fresh
    reference = encode_values(encoder, ["a red square", "a blue circle"], CPU, 2)
    seen = _counting(encoder)
    first = ["a red circle", "a blue square", "the green triangle on white", "a yellow circle"]
    a = _latents(encoder, first, tmp_path)
    assert seen[0] == 4
    b = _latents(encoder, first[1:3] + ["a red square", "a blue circle", "a red square"], tmp_path)
    assert seen[0] == 6                                       # two new values (one repeated), nothing else
    assert "cached 2 new latents" in capsys.readouterr().out
    assert torch.equal(b[:2], a[1:3]) and torch.equal(b[2], b[4])
    assert torch.allclose(b[2:4], reference, atol=1e-6)
    _latents(encoder, first[::-1], tmp_path)                  # a subset in another order: read, not encoded
    assert seen[0] == 6 and "read 4 cached latents" in capsys.readouterr().out


def test_an_export_hits_the_cache_training_built(tmp_path, tiny_text_model, shapes_data, capsys):
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{"train.max_steps": 1, "data.val": None})
    fuse.train(write_recipe(tmp_path / "r.yaml", r))
    model = fuse.load(tmp_path / "run" / "export")    # its encoders' options hold ./ paths into the export
    assert model.encoders["text"].options.model != str(tiny_text_model)
    captions = [json.loads(line)["text"] for line in shapes_data["train"].read_text().splitlines()]
    images = [str(shapes_data["train"].parent / json.loads(line)["image"])
              for line in shapes_data["train"].read_text().splitlines()]
    capsys.readouterr()
    seen = {m: _counting(model.encoders[m]) for m in ("image", "text")}
    cache = tmp_path / "cache"
    z = model.embed("text", captions, progress=True, cache_dir=cache)
    model.embed("image", images, progress=True, cache_dir=cache)
    assert seen == {"image": [0], "text": [0]}                # nothing re-encoded
    assert capsys.readouterr().out.count("cached latents from") == 2
    assert torch.allclose(z, model.embed("text", captions), atol=1e-5)
    shards = sorted(cache.rglob("shard-*.json"))
    result = CliRunner().invoke(cli, ["eval", str(tmp_path / "run"), "--data", str(shapes_data["train"]),
                                      "--cache-dir", str(cache), "--json"])
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)                                  # nothing but the report on stdout
    assert sorted(cache.rglob("shard-*.json")) == shards       # every latent came from the store


def test_damaged_shards_are_re_encoded_with_a_message(encoder, tmp_path, capsys):
    values = ["a red circle", "a blue square", "the green triangle on white"]
    first = _latents(encoder, values, tmp_path, shard_rows=2)
    folder = next((tmp_path / "latent-store").iterdir())
    shards = sorted(folder.glob("shard-*.safetensors"), key=lambda p: json.loads(p.with_suffix(".json").read_text())["shape"][0])
    small, big = shards                                       # 1 row and 2 rows
    big.write_bytes(big.read_bytes()[:40])
    assert torch.equal(_latents(encoder, values, tmp_path, shard_rows=2), first)
    assert "(truncated)); re-encoding those rows" in capsys.readouterr().out
    save_file({"latents": torch.zeros(1, 32)}, str(small))   # same size, other values
    assert torch.equal(_latents(encoder, values, tmp_path, shard_rows=2), first)
    assert "does not match its recorded hash" in capsys.readouterr().out
    assert len(list(folder.glob("shard-*.json"))) == len(list(folder.glob("shard-*.safetensors"))) == 2


def test_a_nan_shard_is_refused_with_one_line(encoder, tmp_path):
    values = ["a red circle", "a blue square"]
    _latents(encoder, values, tmp_path)
    folder = next((tmp_path / "latent-store").iterdir())
    for f in folder.glob("shard-*"):
        f.unlink()
    bad = torch.ones(2, 32)
    bad[1, 3] = float("nan")
    store = LatentStore(folder, {})
    store.write_shard("r0of1", [store_key for store_key in _keys(values)], {"latents": bad})
    assert json.loads(next(folder.glob("shard-*.json")).read_text())["finite"] is False
    with pytest.raises(DataError, match=r"shard-r0of1-\w+\.safetensors holds NaN/Inf latents"):
        _latents(encoder, values, tmp_path)


def _keys(values):
    from fuse.base.inputs import input_kind
    from fuse.data.store import value_key

    return [value_key(input_kind("text").identity(v)) for v in values]


def test_store_files_respect_the_umask(encoder, tmp_path):
    old = os.umask(0o022)
    try:
        _latents(encoder, ["a red circle"], tmp_path)
    finally:
        os.umask(old)
    folder = next((tmp_path / "latent-store").iterdir())
    assert oct(folder.stat().st_mode & 0o777) == oct(0o755)
    for f in folder.iterdir():
        assert oct(f.stat().st_mode & 0o777) == oct(0o644), f  # safetensors alone would write 0600


def test_fp16_storage_is_within_half_precision_rounding(encoder, tmp_path):
    values = ["a red circle", "a blue square", "the green triangle on white"]
    full = _latents(encoder, values, tmp_path)
    half = _latents(encoder, values, tmp_path, dtype="float16")
    assert half.dtype == torch.float16
    # round to nearest: |x16 - x| <= 2^-11 |x| for normal fp16 numbers (|x| >= 2^-14), 2^-25 below
    assert ((half.float() - full).abs() <= torch.maximum(full.abs() * 2 ** -11, torch.tensor(2 ** -25))).all()


ENCODE = """
import sys, torch
from pathlib import Path
from fuse.cli import cli
from fuse.data.cache import EncodeOptions, cached_latents
from fuse.base.plugin_manager import registry
enc = registry("encoder").create("hf-text", {"model": sys.argv[2]})
values = [f"a shape numbered {i} " + "word " * (i % 7) for i in range(int(sys.argv[3]))]
cached_latents(enc, {"name": "hf-text"}, values, Path(sys.argv[1]), torch.device("cpu"),
               EncodeOptions(batch_size=3, shard_rows=6))
"""


def test_kill_9_mid_encoding_resumes_with_only_the_missing_shards(encoder, tmp_path, tiny_text_model, capsys):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    n = 240
    proc = subprocess.Popen([sys.executable, "-c", ENCODE, str(tmp_path / "a"), str(tiny_text_model), str(n)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = tmp_path / "a" / "latent-store"
    t0 = time.time()
    while not list(store.glob("*/shard-*.json")):
        assert proc.poll() is None and time.time() - t0 < 300
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)   # just after its first shard was published: somewhere in the next ones
    assert proc.wait() == -signal.SIGKILL
    done = sum(len(json.loads(p.read_text())["keys"]) for p in store.glob("*/shard-*.json"))
    assert 0 < done < n
    values = [f"a shape numbered {i} " + "word " * (i % 7) for i in range(n)]
    capsys.readouterr()
    resumed = cached_latents(encoder, {"name": "hf-text"}, values, tmp_path / "a", CPU,
                             EncodeOptions(batch_size=3, shard_rows=6))
    assert f"cached {n - done} new latents" in capsys.readouterr().out   # only the missing rows
    assert not list(store.glob("*/.shard-*")) and all(p.with_suffix(".json").exists()
                                                     for p in store.glob("*/shard-*.safetensors"))
    whole = cached_latents(encoder, {"name": "hf-text"}, values, tmp_path / "b", CPU,
                           EncodeOptions(batch_size=3, shard_rows=6))
    assert torch.equal(resumed, whole)   # shards batch the same rows either way: bit-identical


CONCURRENT = """
import json, sys
from pathlib import Path
import torch
from fuse.cli import cli
from fuse.data.cache import EncodeOptions, cached_latents
from fuse.data.datasets import build_dataset
from fuse.base.plugin_manager import registry
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
    folder = next((tmp_path / "latent-store").iterdir())
    assert not list(folder.glob(".shard-*"))
