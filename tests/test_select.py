"""`fuse select` and `fuse curate` through the CLI, on tiny config-built encoders and rendered shapes."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from fuse.cli import cli


def _candidates(tmp_path: Path, text_model: Path, **extra) -> Path:
    path = tmp_path / "candidates.yaml"
    path.write_text(yaml.safe_dump({
        "candidates": {
            "image": [{"label": "effnet", "name": "timm",
                       "options": {"model": "test_efficientnet", "pretrained": False, "init_seed": 0}},
                      {"label": "effnet-seed1", "name": "timm",
                       "options": {"model": "test_efficientnet", "pretrained": False, "init_seed": 1}}],
            "text": [{"label": "bert", "name": "hf-text", "options": {"model": str(text_model)}},
                     {"label": "bert-1layer", "name": "hf-text", "options": {"model": str(text_model), "num_layers": 1}}],
        },
        "k": 3, **extra}))
    return path


def test_select_ranks_every_cross_modal_pair_and_writes_json_heatmap_and_a_recipe(tmp_path, tiny_text_model,
                                                                                  shapes_data):
    from fuse.data.cache import encode_values
    from fuse.recipes.plan import load_plan
    from fuse.recipes.spec import resolve_spec

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["select", str(_candidates(tmp_path, tiny_text_model)), "--data",
                                      str(shapes_data["train"]), "--out", str(out), "--device", "cpu",
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "select.json").read_text())
    rows = report["ranking"]
    assert len(rows) == 4 and [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert [r["linear_cka"] for r in rows] == sorted((r["linear_cka"] for r in rows), reverse=True)
    assert all(r["n"] == 24 and r["parameters"] > 0 and min(r["throughput"].values()) > 0 for r in rows)
    assert "effnet + bert" in result.output and "params (M)" in result.output
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"

    # the score is linear CKA of the candidates' own latents, by the feature-space formula
    row = next(r for r in rows if r["candidates"] == ["effnet", "bert"])
    latents = {}
    for m, name, opts in (("image", "timm", {"model": "test_efficientnet", "pretrained": False, "init_seed": 0}),
                          ("text", "hf-text", {"model": str(tiny_text_model)})):
        enc = resolve_spec("encoder", name, opts).build()
        lines = [json.loads(line) for line in shapes_data["train"].read_text().splitlines()]
        values = [str((shapes_data["train"].parent / r[m]).resolve()) if m == "image" else r[m] for r in lines]
        latents[m] = encode_values(enc, values, torch.device("cpu"), 16).double().numpy()
    x, y = (v - v.mean(0) for v in (latents["image"], latents["text"]))
    want = np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    assert row["linear_cka"] == pytest.approx(want, rel=1e-4)

    # the written recipe trains the top pair and validates as it stands
    recipe = load_plan(out / "recipe.yaml").recipe
    top = {e["label"]: e["spec"] for es in report["encoders"].values() for e in es}
    a, b = rows[0]["candidates"]
    assert recipe.modalities["image"].encoder.options == top[a]["options"]
    assert recipe.modalities["text"].encoder.options == top[b]["options"]


@pytest.mark.parametrize("case, message", [
    ("audio", "candidates for audio, but the sample"),
    ("k", "k = 40 needs more than 40 pairs"),
    ("tiny", "has 1 pair(s); scoring needs at least 4"),
])
def test_select_bad_input_is_one_clear_line(tmp_path, tiny_text_model, shapes_data, case, message):
    cands = _candidates(tmp_path, tiny_text_model)
    sample, args = shapes_data["train"], []
    if case == "audio":
        data = yaml.safe_load(cands.read_text())
        data["candidates"]["audio"] = [{"name": "hf-text", "options": {"model": str(tiny_text_model)}}]
        cands.write_text(yaml.safe_dump(data))
    elif case == "k":
        args = ["--k", "40"]
    else:
        sample = tmp_path / "one.jsonl"
        line = json.loads(shapes_data["train"].read_text().splitlines()[0])
        line["image"] = str((shapes_data["train"].parent / line["image"]).resolve())
        sample.write_text(json.dumps(line) + "\n")
    result = CliRunner().invoke(cli, ["select", str(cands), "--data", str(sample), "--out", str(tmp_path / "o"),
                                      "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.output


def test_curate_drops_duplicates_caps_concepts_and_keeps_the_files_reachable(tmp_path, tiny_text_model,
                                                                             shapes_data):
    concepts = tmp_path / "concepts.txt"
    concepts.write_text("# colours\nred\ngreen\nblue\nyellow\n")
    out = tmp_path / "sub" / "curated.jsonl"
    out.parent.mkdir()
    args = ["curate", str(shapes_data["train"]), "--concepts", str(concepts), "--out", str(out), "--floor", "-1",
            "--encoder", json.dumps({"name": "hf-text", "options": {"model": str(tiny_text_model)}}),
            "--device", "cpu", "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    counts = json.loads(out.with_suffix(".counts.json").read_text())
    # every caption appears twice (two renderings): identical embeddings, so one of each pair goes
    assert counts["pairs"] == 24 and counts["near_duplicates"] >= 12
    assert len({r["text"] for r in kept}) == len(kept) == counts["kept"]
    assert sum(c["kept"] for c in counts["concepts"].values()) == len(kept)
    assert all(c["kept"] <= counts["per_concept_cap"] for c in counts["concepts"].values())
    assert all((out.parent / r["image"]).is_file() for r in kept)   # re-anchored to the output folder
    assert out.with_suffix(".counts.png").read_bytes()[:4] == b"\x89PNG"

    # a cap of 1 keeps at most one pair per concept; another seed draws another (still valid) set
    capped = CliRunner().invoke(cli, args + ["--per-concept", "1", "--seed", "3"])
    assert capped.exit_code == 0, capped.output
    assert len(out.read_text().splitlines()) <= 4


@pytest.mark.parametrize("concepts, extra, message", [
    ("# only a comment\n\n", [], "the concept list is empty"),
    ("red\n", ["--floor", "0.9999"], "no pair of"),
])
def test_curate_bad_input_is_one_clear_line(tmp_path, tiny_text_model, shapes_data, concepts, extra, message):
    path = tmp_path / "c.txt"
    path.write_text(concepts)
    result = CliRunner().invoke(cli, ["curate", str(shapes_data["train"]), "--concepts", str(path), "--out",
                                      str(tmp_path / "o.jsonl"), "--encoder",
                                      json.dumps({"name": "hf-text", "options": {"model": str(tiny_text_model)}}),
                                      "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), *extra])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.output


def test_init_seed_gives_the_same_random_weights_and_leaves_the_global_rng_alone(tiny_text_model):
    from fuse.recipes.spec import resolve_spec

    def weights(**opts):
        enc = resolve_spec("encoder", "hf-text", {"model": str(tiny_text_model), **opts}).build()
        return torch.cat([p.detach().flatten() for p in enc.parameters()])

    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = weights(init_seed=5)
    assert torch.rand(1) == before                       # the global RNG did not move
    assert torch.equal(a, weights(init_seed=5))
    assert not torch.equal(a, weights(init_seed=6)) and not torch.equal(a, weights())


def test_pkgsplit_joins_the_parts_of_a_split_zip_from_installed_distributions(tmp_path, monkeypatch):
    from fuse.base.paths import resolve_path

    model = tmp_path / "src" / "tiny-model"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "weights.bin").write_bytes(bytes(range(256)) * 64)
    blob = tmp_path / "whole.zip"
    with zipfile.ZipFile(blob, "w") as z:
        for f in model.iterdir():
            z.write(f, f"tiny-model/{f.name}")
    data = blob.read_bytes()
    site = tmp_path / "site"
    for i, part in enumerate((data[:len(data) // 2], data[len(data) // 2:]), 1):
        folder, name = site / f"tiny-model-part_00{i}" / "input", f"tiny-model.zip.00{i}"
        folder.mkdir(parents=True)
        (folder / name).write_bytes(part)
        info = site / f"tiny_model_part_00{i}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: tiny-model-part-00{i}\nVersion: 0.1\n")
        (info / "RECORD").write_text(f"tiny-model-part_00{i}/input/{name},,\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("FUSE_CACHE", str(tmp_path / "cache"))
    path = resolve_path("pkgsplit:tiny-model")
    assert path == (tmp_path / "cache" / "models" / "tiny-model" / "tiny-model").resolve()
    assert (path / "weights.bin").read_bytes() == (model / "weights.bin").read_bytes()
    assert resolve_path("pkgsplit:tiny-model") == path          # unpacked once, then reused
    with pytest.raises(Exception, match="no installed package holds absent-model.zip.001"):
        resolve_path("pkgsplit:absent-model")
    assert sys.path[0] == str(site)
