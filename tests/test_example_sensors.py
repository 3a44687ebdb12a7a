"""The fuse-sensors example (docs/examples/fuse-sensors): a third-party package adds an input kind
fuse has never heard of (sensor signals in .npy files), an encoder for it and a dataset, with no
change to fuse.

The fast tests register the example in-process (its source folder on sys.path). The slow one
builds the fuse-align and fuse-sensors wheels, installs both into a fresh venv (heavy
dependencies borrowed through a .pth file, as in test_packaging.py, so nothing is downloaded)
and drives that venv's `fuse`: plugins, data build, train, export, embed, eval.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_ok

import fuse

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "fuse-sensors"
# The trained model must beat its untrained heads on val mean R@5 by this many points. R@5, not R@1: the
# captions repeat (one per channel and wave), every caption is its own query (as clip_benchmark scores them),
# and identical captions tie, which caps R@1 whatever the model. Observed with `fuse eval` on val (80 signals,
# their captions), the recipe as shipped, seed 0, untrained heads -> trained: mean R@5 25.0 -> 95.6, mean R@1
# 6.25 -> 33.75
# (before every caption was its own query, identical captions were one query and mean R@1 read 15.8 -> 86.8).
MARGIN = 30.0


@pytest.fixture
def sensors(monkeypatch):
    """The example's plugin package, registered in-process and unregistered afterwards.

    Loaded from its file, not by putting its folder on sys.path: a build leaves an .egg-info
    there, whose entry point would register it a second time."""
    spec = importlib.util.spec_from_file_location("fuse_sensors", EXAMPLE / "fuse_sensors" / "__init__.py",
                                                  submodule_search_locations=[str(EXAMPLE / "fuse_sensors")])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fuse_sensors", module)  # its relative imports need it there
    spec.loader.exec_module(module)
    fuse.register_plugin(module, name="fuse_sensors")
    try:
        yield module
    finally:
        fuse.unregister_plugin(module)


def _bad_files(d: Path) -> dict[str, Path]:
    files = {name: d / f"{name}.npy" for name in ("pickled", "integer", "rank1", "empty", "nan", "text", "truncated")}
    np.save(files["pickled"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(files["integer"], np.ones((2, 8), dtype=np.int64))
    np.save(files["rank1"], np.ones(8, dtype=np.float32))
    np.save(files["empty"], np.ones((2, 0), dtype=np.float32))
    np.save(files["nan"], np.array([[0.0, np.nan]], dtype=np.float32))
    files["text"].write_text("not an array")
    np.save(files["truncated"], np.ones((4, 100), dtype=np.float32))
    files["truncated"].write_bytes(files["truncated"].read_bytes()[:300])
    files["missing"] = d / "missing.npy"
    return files


@pytest.mark.parametrize("case, says", [
    ("pickled", "holds pickled objects"), ("integer", "holds int64 values"), ("rank1", r"shape \(8,\)"),
    ("empty", "is empty"), ("nan", "NaN"), ("text", "not an .npy file"), ("truncated", "Unreadable"),
    ("missing", "not found")])
def test_a_bad_sensor_file_is_a_data_error_naming_it(sensors, tmp_path, case, says):
    path = _bad_files(tmp_path)[case]
    kind = fuse.input_kind("sensor")
    with pytest.raises(fuse.DataError, match=says) as err:
        kind.read(str(path))
    assert str(path) in str(err.value)
    with pytest.raises(fuse.DataError, match=str(path)):
        kind.check(str(path))  # what data.bad_media: skip calls


def test_collate_pads_and_crops_to_a_batch_with_lengths(sensors):
    kind = fuse.input_kind("sensor")
    long = np.ones((3, kind.max_length + 5), dtype=np.float32)
    batch = kind.collate([np.ones((3, 7), dtype=np.float32), long])
    assert batch["signal"].shape == (2, 3, kind.max_length)
    assert batch["length"].tolist() == [7, kind.max_length]
    assert batch["signal"][0, :, 7:].abs().sum() == 0
    with pytest.raises(fuse.DataError, match="Sensor signal 1 of the batch.*shape \\(7,\\)"):
        kind.collate([np.ones((3, 7), dtype=np.float32), np.ones(7, dtype=np.float32)])  # in memory, checked too
    with pytest.raises(fuse.DataError, match="different channel counts"):
        kind.collate([np.ones((3, 7), dtype=np.float32), np.ones((2, 7), dtype=np.float32)])


def test_padding_never_changes_a_signals_latent(sensors):
    enc = fuse.create("encoder", "sensor-conv", {"channels": 3, "width": 16, "layers": 3, "dim": 8}).eval()
    rng = np.random.default_rng(0)
    signals = [rng.standard_normal((3, n)).astype(np.float32) for n in (37, 100, 5)]
    with torch.no_grad():
        together = enc(enc.preprocess(signals))
        alone = torch.cat([enc(enc.preprocess([s])) for s in signals])
    assert together.shape == (3, 8)
    assert torch.allclose(together, alone, atol=1e-5)


def test_encoder_init_is_seeded_and_save_reloads_it(sensors, tmp_path):
    opts = {"channels": 2, "width": 8, "layers": 2, "dim": 4}
    batch = fuse.input_kind("sensor").collate([np.sin(np.arange(40, dtype=np.float32)).reshape(2, 20)])
    a, b = (fuse.create("encoder", "sensor-conv", {**opts, "seed": s}).eval() for s in (0, 0))
    other = fuse.create("encoder", "sensor-conv", {**opts, "seed": 1}).eval()
    saved = a.save(tmp_path / "enc")
    weights = tmp_path / "enc" / "model.safetensors"
    assert saved["checkpoint"] == "./model.safetensors" and weights.is_file()
    # the weights, not the seed, make the reloaded encoder
    reloaded = fuse.create("encoder", "sensor-conv", {**saved, "checkpoint": str(weights), "seed": 7}).eval()
    with torch.no_grad():
        assert torch.allclose(a(batch), b(batch)) and not torch.allclose(a(batch), other(batch))
        assert torch.allclose(a(batch), reloaded(batch))
    with pytest.raises(fuse.ModelFileError, match="does not fit sensor-conv"):
        fuse.create("encoder", "sensor-conv", {**saved, "width": 16, "checkpoint": str(weights)})


def test_dataset_is_deterministic_and_captions_name_the_active_channel(sensors, tmp_path):
    opts = {"items": 40, "val_fraction": 0.25, "channels": 3, "seed": 3}
    splits = [fuse.create("dataset", "sensor-captions", opts).build(tmp_path / d) for d in ("a", "b")]
    for split in ("train", "val"):
        assert splits[0][split].read_bytes() == splits[1][split].read_bytes()
    records = {s: [json.loads(line) for line in splits[0][s].read_text().splitlines()] for s in ("train", "val")}
    assert (len(records["train"]), len(records["val"])) == (30, 10)
    assert not {r["id"] for r in records["train"]} & {r["id"] for r in records["val"]}
    for r in records["train"] + records["val"]:
        signal = fuse.input_kind("sensor").read(str(tmp_path / "a" / r["sensor"]))
        assert (tmp_path / "a" / r["sensor"]).read_bytes() == (tmp_path / "b" / r["sensor"]).read_bytes()
        assert signal.shape[0] == 3 and f"on channel {r['channel']} " in r["text"]
        assert int(np.abs(signal).mean(axis=1).argmax()) + 1 == r["channel"]  # the caption's channel is the active one


# ---------------------------------------------------------------- the installed package, end to end

@pytest.mark.slow
def test_installed_example_lists_its_input_kind_encoder_and_dataset(plugin_venv):
    rows = json.loads(run_ok(plugin_venv / "bin" / "fuse", "plugins", "--json", cwd="/").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["sensor"]["kind"] == "input"
    assert by_name["sensor-conv"]["kind"] == "encoder" and by_name["sensor-conv"]["modalities"] == ["sensor"]
    assert by_name["sensor-captions"]["kind"] == "dataset"
    assert {by_name[n]["package"] for n in ("sensor", "sensor-conv", "sensor-captions")} == {"fuse-sensors 0.1.0"}


@pytest.mark.slow
def test_installed_example_trains_exports_embeds_and_beats_its_baseline(plugin_venv, tmp_path):
    fuse_cli, py = plugin_venv / "bin" / "fuse", plugin_venv / "bin" / "python"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cache = tmp_path / "cache"
    built = run_ok(fuse_cli, "data", "build", "sensor-captions", "--cache-dir", cache, cwd=tmp_path, env=env).stdout
    splits = dict(line.split(": ", 1) for line in built.splitlines() if line.startswith(("train: ", "val: ")))
    val = Path(splits["val"])

    run_ok(fuse_cli, "train", EXAMPLE / "sensor_text.yaml", f"output_dir={tmp_path / 'run'}",
         f"data.cache_dir={cache}", cwd=tmp_path, env=env)
    out = tmp_path / "exported"
    run_ok(fuse_cli, "export", tmp_path / "run", out, cwd=tmp_path, env=env)
    config = json.loads((out / "fuse_model.json").read_text())
    encoder = config["modalities"]["sensor"]["encoder"]
    assert encoder["package"] == "fuse-sensors 0.1.0" and encoder["options"]["checkpoint"] == "./model.safetensors"
    assert (out / "sensor" / "encoder" / "model.safetensors").is_file()

    paths = [str(val.parent / json.loads(line)["sensor"]) for line in val.read_text().splitlines()[:3]]
    embed = ("import json, sys, fuse; z = fuse.load(sys.argv[1]).embed('sensor', sys.argv[2:]); "
             "print(json.dumps({'shape': list(z.shape), 'norms': z.norm(dim=-1).tolist()}))")
    result = json.loads(run_ok(py, "-c", embed, out, *paths, cwd="/", env=env).stdout.strip().splitlines()[-1])
    assert result["shape"] == [3, config["embed_dim"]]
    assert np.allclose(result["norms"], 1.0, atol=1e-4)

    report = json.loads(run_ok(fuse_cli, "eval", out, "--task", "retrieval", "--data", val, "--json",
                             cwd=tmp_path, env=env).stdout)
    trained, untrained = (report["metrics"][k]["mean/R@5"] for k in ("model", "untrained heads"))
    assert trained > untrained + MARGIN, report["metrics"]
