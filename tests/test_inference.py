"""Using an exported model: fuse.load -> embed / towers / similarity, and `fuse embed` files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import fuse
from fuse.cli import cli
from fuse.model.embed_file import read_embeddings_file


@pytest.fixture(scope="module")
def trained_export(trained_shapes_export):
    return trained_shapes_export


def val_records(shapes_data):
    return [json.loads(line) for line in shapes_data["val"].read_text().splitlines()]


def test_loaded_export_embeds_as_the_trained_model(trained_export, shapes_data, tmp_path):
    """The export, loaded again, gives the embeddings the trained heads give (computed by hand
    from the encoder latents and the head weights of the checkpoint the export came from)."""
    from safetensors.torch import load_file

    model = fuse.load(trained_export)
    root = shapes_data["val"].parent
    images = [str(root / r["image"]) for r in val_records(shapes_data)]
    head = load_file(str(trained_export.parent / "checkpoints" / "best.safetensors"))
    w = head["model.heads.image.proj.weight"]  # the linear head has no bias by default
    latents = model.encode("image", images)
    expected = torch.nn.functional.normalize(latents @ w.T, dim=-1)
    assert torch.allclose(model.embed("image", images), expected, atol=1e-5)
    # the tower module gives the same from a preprocessed batch, and from raw inputs
    tower = model.towers["image"]
    assert isinstance(tower, torch.nn.Module)
    assert torch.allclose(tower(tower.preprocess(images[:4])), expected[:4], atol=1e-5)
    assert torch.allclose(tower.embed(images), expected, atol=1e-5)
    assert torch.allclose(tower(images[:2]), expected[:2], atol=1e-5)  # raw inputs straight in


def test_similarity_is_the_cosine_of_embeddings(trained_export):
    model = fuse.load(trained_export)
    a = model.embed("text", ["a red circle", "a blue square"])
    b = model.embed("text", ["a green triangle"])
    sim = model.similarity(("text", ["a red circle", "a blue square"]), ("text", ["a green triangle"]))
    assert sim.shape == (2, 1)
    assert torch.allclose(sim, torch.nn.functional.cosine_similarity(a, b.expand(2, -1))[:, None], atol=1e-6)


def test_fuse_embed_writes_embeddings_and_ids_in_input_order(trained_export, shapes_data, tmp_path):
    model = fuse.load(trained_export)
    root = shapes_data["val"].parent
    folder = root / "img"
    out = tmp_path / "img.safetensors"
    result = CliRunner().invoke(cli, ["embed", str(trained_export), "-m", "image", str(folder), "-o", str(out),
                                      "--cache-dir", str(tmp_path / "cache"), "--shard-rows", "10"])
    assert result.exit_code == 0, result.output
    emb, ids = read_embeddings_file(out)
    assert ids == sorted(str(p.resolve()) for p in folder.glob("*.png"))
    assert torch.allclose(emb, model.embed("image", ids), atol=1e-5)
    assert not (tmp_path / "img.safetensors.parts").exists()

    texts = tmp_path / "captions.txt"
    texts.write_text("a red circle\n\na blue square\na red circle\n")
    out = tmp_path / "t.npy"
    result = CliRunner().invoke(cli, ["embed", str(trained_export), "-m", "text", str(texts), "-o", str(out),
                                      "--no-cache"])
    assert result.exit_code == 0, result.output
    arr = np.load(out, allow_pickle=False)
    assert json.loads((tmp_path / "t.npy.ids.json").read_text()) == ["a red circle", "a blue square", "a red circle"]
    assert torch.allclose(torch.from_numpy(arr), model.embed("text", ["a red circle", "a blue square",
                                                                      "a red circle"]), atol=1e-5)
    result = CliRunner().invoke(cli, ["embed", str(trained_export), "-m", "text", "-o", str(tmp_path / "s.npy"),
                                      "--no-cache"], input="a green triangle\n")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "s.npy").shape == (1, model.embed_dim)


def test_fuse_embed_resumes_an_interrupted_job(trained_export, shapes_data, tmp_path, monkeypatch):
    """A job killed after its first shard embeds only the rest when run again."""
    import fuse.model.index as index_mod

    folder = shapes_data["val"].parent / "img"
    out = tmp_path / "e.safetensors"
    args = ["embed", str(trained_export), "-m", "image", str(folder), "-o", str(out), "--shard-rows", "8",
            "--no-cache"]
    real = index_mod.save_tensors
    calls = []

    def dies_on_second_shard(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(tensors, path, metadata)

    monkeypatch.setattr(index_mod, "save_tensors", dies_on_second_shard)
    assert CliRunner().invoke(cli, args).exit_code != 0
    assert len(json.loads((tmp_path / "e.safetensors.parts" / "index.json").read_text())["items"]) == 8
    calls.clear()
    monkeypatch.setattr(index_mod, "save_tensors", real)
    embedded = []
    import fuse.model.embed as inf

    orig = inf.embed_values
    monkeypatch.setattr(inf, "embed_values", lambda m, mod, values, *a, **k: embedded.append(len(values)) or
                        orig(m, mod, values, *a, **k))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    n = len(list(folder.glob("*.png")))
    assert sum(embedded) == n - 8
    emb, ids = read_embeddings_file(out)
    assert torch.allclose(emb, fuse.load(trained_export).embed("image", ids), atol=1e-5)


@pytest.mark.parametrize("args, message", [
    (["-m", "audio", "x.wav"], "has no 'audio' tower"),
    (["-m", "image", "does-not-exist.png"], "image input not found: does-not-exist.png"),
    (["-m", "image", "EMPTY"], "holds no image files"),
    (["-m", "image", "nothing-*.png"], "No file matches"),
])
def test_fuse_embed_bad_inputs_are_one_line(trained_export, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    result = CliRunner().invoke(cli, ["embed", str(trained_export), *args, "-o", str(tmp_path / "o.safetensors")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_inference_doc_example_runs(trained_export, shapes_data, monkeypatch, tmp_path):
    """docs/inference.md's Python example, run as written against a small trained export."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "inference.md").read_text()
    code = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    # the doc points at the quickstart export and the emoji build; here: the tiny export and the shapes
    code = code.replace("runs/quickstart/export", str(trained_export))
    (tmp_path / "cache" / "datasets" / "emoji-0").mkdir(parents=True)
    shutil.copytree(shapes_data["val"].parent / "img", tmp_path / "cache" / "datasets" / "emoji-0" / "images")
    monkeypatch.setenv("FUSE_CACHE", str(tmp_path / "cache"))
    namespace = {}
    exec(compile(code, "docs/inference.md", "exec"), namespace)
    assert namespace["hits"][0][0]["rank"] == 1


def test_embedding_goes_through_the_latent_cache(trained_export, shapes_data, tmp_path):
    model = fuse.load(trained_export)
    images = sorted(str(p) for p in (shapes_data["val"].parent / "img").glob("val-*.png"))
    calls = []
    model.encoders["image"].register_forward_hook(lambda *_: calls.append(1))
    first = model.embed("image", images, cache_dir=tmp_path / "cache")
    assert calls and list((tmp_path / "cache" / "latent-store").iterdir())
    calls.clear()
    again = model.embed("image", images, cache_dir=tmp_path / "cache")
    assert not calls  # every latent read from the store, none encoded
    assert torch.equal(first, again) and torch.allclose(first, model.embed("image", images), atol=1e-5)
