"""Reference models as fuse models (docs/references.md): CLIP, SigLIP and CLAP from transformers and an
open_clip architecture, each built tiny from its config with random weights, named by a source string
(hf:DIR, open_clip:ARCH@WEIGHTS) and exported with `fuse export SOURCE DIR`.

Golden numbers come from the reference libraries themselves: a tower's fuse embedding equals
get_image_features / get_text_features / get_audio_features (open_clip: encode_image / encode_text),
normalised, on the same inputs through the reference's own processor and tokenizer.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import fuse
from fuse.cli import cli
from reference_fixtures import make_clap, make_clip, make_open_clip, make_siglip

TEXTS = ["a red circle", "the blue square on white", "green"]


@pytest.fixture(scope="module")
def refs(tmp_path_factory) -> dict[str, str]:
    """kind -> source string of a tiny reference."""
    tmp = tmp_path_factory.mktemp("refs")
    return {"clip": f"hf:{make_clip(tmp / 'clip')}", "siglip": f"hf:{make_siglip(tmp / 'siglip')}",
            "open_clip": make_open_clip(tmp / "open_clip"), "clap": f"hf:{make_clap(tmp / 'clap')}"}


@pytest.fixture(scope="module")
def images():
    return [Image.new("RGB", (48, 40), (220, 30, 30)), Image.fromarray(np.random.default_rng(0).integers(
        0, 255, (50, 64, 3), dtype=np.uint8))]


@pytest.fixture(scope="module")
def tone_files(tmp_path_factory) -> list[str]:
    tmp = tmp_path_factory.mktemp("tones")
    paths = []
    for i, freq in enumerate((220.0, 660.0, 1320.0)):
        t = np.arange(int(0.6 * 16000)) / 16000
        sf.write(tmp / f"tone{i}.wav", (0.3 * np.sin(2 * np.pi * freq * t)).astype("float32"), 16000)
        paths.append(str(tmp / f"tone{i}.wav"))
    return paths


def _hf_reference(directory: str, kind: str, images, texts):
    """transformers alone: the model's normalised image and text features through its own processor."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model, tok = AutoModel.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)
    # SigLIP was trained on 64 padded positions, no attention mask (its model card: padding="max_length")
    text_in = {"input_ids": tok(texts, padding="max_length", max_length=64, return_tensors="pt")["input_ids"]} \
        if kind == "siglip" else tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        img = model.get_image_features(**AutoImageProcessor.from_pretrained(directory)(images=images,
                                                                                       return_tensors="pt"))
        txt = model.get_text_features(**text_in)
    return F.normalize(img.pooler_output, dim=-1), F.normalize(txt.pooler_output, dim=-1)


def _open_clip_reference(source: str, images, texts):
    import open_clip

    arch, weights = source.removeprefix("open_clip:").split("@")
    model, _, transform = open_clip.create_model_and_transforms(arch, pretrained=weights)
    with torch.no_grad():
        return (model.eval().encode_image(torch.stack([transform(im) for im in images]), normalize=True),
                model.encode_text(open_clip.get_tokenizer(arch)(texts), normalize=True))


@pytest.mark.parametrize("kind", ["clip", "siglip", "open_clip"])
def test_image_text_reference_equals_its_library(refs, images, kind):
    model = fuse.load(refs[kind])
    assert model.modalities == ("image", "text")
    assert all(spec["head"].name == "identity" for spec in model.specs.values())
    assert not list(model.heads.parameters())
    want = _open_clip_reference(refs[kind], images, TEXTS) if kind == "open_clip" else \
        _hf_reference(refs[kind].removeprefix("hf:"), kind, images, TEXTS)
    got = model.embed("image", images), model.embed("text", TEXTS)
    assert torch.allclose(got[0], want[0], atol=1e-5) and torch.allclose(got[1], want[1], atol=1e-5)


def test_siglip_text_is_padded_to_its_64_positions_and_clip_truncates_at_77(refs):
    siglip, clip = fuse.load(refs["siglip"]).encoders["text"], fuse.load(refs["clip"]).encoders["text"]
    assert set(siglip.preprocess(["a"])) == {"input_ids"} and siglip.preprocess(["a"])["input_ids"].shape == (1, 64)
    assert clip.preprocess(["a " * 200])["input_ids"].shape == (1, 77)


def test_clap_reference_equals_transformers(refs, tone_files):
    """CLAP's audio tower (pooler + audio projection) and text tower (LAION-CLAP's 77 tokens + text projection)."""
    import torchaudio.functional as AF
    from transformers import AutoFeatureExtractor, AutoTokenizer, ClapModel

    directory = refs["clap"].removeprefix("hf:")
    model = fuse.load(refs["clap"])
    assert model.modalities == ("audio", "text") and model.embed_dim == 12
    ref = ClapModel.from_pretrained(directory).eval()
    waves = [AF.resample(torch.from_numpy(sf.read(p, dtype="float32")[0]), 16000, 48000).numpy() for p in tone_files]
    feats = AutoFeatureExtractor.from_pretrained(directory)(waves, sampling_rate=48000, return_tensors="pt")
    tok = AutoTokenizer.from_pretrained(directory)(TEXTS, padding="max_length", max_length=77, truncation=True,
                                                   return_tensors="pt")
    with torch.no_grad():
        want_audio = F.normalize(ref.get_audio_features(**feats).pooler_output, dim=-1)
        want_text = ref.get_text_features(**tok).pooler_output  # transformers normalises CLAP's text features
    assert torch.allclose(model.embed("audio", tone_files), want_audio, atol=1e-5)
    assert torch.allclose(model.embed("text", TEXTS), want_text, atol=1e-5)


@pytest.mark.parametrize("kind", ["clip", "siglip", "open_clip", "clap"])
def test_export_carries_the_weights_and_gives_the_same_embeddings(refs, images, tone_files, tmp_path, kind):
    """`fuse export SOURCE DIR`, then the source's files are gone: DIR alone gives the same embeddings."""
    source = refs[kind]
    other = ("audio", tone_files) if kind == "clap" else ("image", images)
    before = fuse.load(source)
    want = before.embed(*other), before.embed("text", TEXTS)
    # the source files move away; the export must not read them
    folder = source.removeprefix("hf:") if kind != "open_clip" else source.split("@")[1]
    shutil.copytree(folder, tmp_path / "src") if kind != "open_clip" else shutil.copy(folder, tmp_path / "w")
    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["export", source, str(out)])
    assert result.exit_code == 0, result.output
    (shutil.rmtree if kind != "open_clip" else lambda p: __import__("os").remove(p))(folder)
    try:
        model = fuse.load(out)
        assert torch.allclose(model.embed(*other), want[0], atol=1e-6)
        assert torch.allclose(model.embed("text", TEXTS), want[1], atol=1e-6)
        config = json.loads((out / "fuse_model.json").read_text())
        assert config["card"]["reference"] == source and {t["head"]["name"] for t in config["modalities"].values()} \
            == {"identity"}
        assert all(p.suffix != ".bin" for p in out.rglob("*")) and list(out.rglob("*.safetensors"))
    finally:  # the source back for the other tests
        if kind == "open_clip":
            shutil.copy(tmp_path / "w", folder)
        else:
            shutil.copytree(tmp_path / "src", folder)


def _write_shapes(tmp_path):
    from conftest import write_shapes_manifest

    splits = write_shapes_manifest(tmp_path / "shapes", copies=1)
    labelled = tmp_path / "labels.jsonl"
    records = [json.loads(line) for line in splits["val"].read_text().splitlines()]
    labelled.write_text("".join(json.dumps({"image": str(tmp_path / "shapes" / r["image"]),
                                            "label": r["text"].split()[1]}) + "\n" for r in records))
    return splits["val"], labelled


@pytest.mark.parametrize("kind", ["clip", "open_clip"])  # SigLIP runs hf-vision/hf-text as CLIP does (golden above)
def test_source_string_works_wherever_an_export_does(refs, tmp_path, kind):
    """fuse embed, fuse search and fuse eval (retrieval, zero-shot) take the source string itself."""
    val, labelled = _write_shapes(tmp_path)
    run = CliRunner()
    source = refs[kind]
    emb = run.invoke(cli, ["embed", source, "-m", "text", *TEXTS, "-o", str(tmp_path / "t.safetensors"),
                           "--cache-dir", str(tmp_path / "cache")])
    assert emb.exit_code == 0, emb.output
    from safetensors.torch import load_file

    assert torch.allclose(load_file(str(tmp_path / "t.safetensors"))["embeddings"].float(),
                          fuse.load(source).embed("text", TEXTS), atol=1e-4)
    found = run.invoke(cli, ["search", source, "--index", str(tmp_path / "shapes" / "img"), "-q", "a red circle",
                             "--k", "3", "--json", "--no-cache"])
    assert found.exit_code == 0, found.output
    assert len(json.loads(found.stdout)[0]["results"]) == 3
    for task, data in (("retrieval", val), ("zeroshot", labelled)):
        result = run.invoke(cli, ["eval", source, "--task", task, "--data", str(data), "--json", "--no-baselines",
                                  "--templates", "short"])
        assert result.exit_code == 0, result.output
        metrics = json.loads(result.stdout)["metrics"]["model"]
        assert 0 <= metrics["image_to_text/R@1" if task == "retrieval" else "top1"] <= 100


def test_clap_reference_classifies_audio_zero_shot(refs, tone_files, tmp_path):
    manifest = tmp_path / "tones.jsonl"
    manifest.write_text("".join(json.dumps({"audio": p, "label": lab}) + "\n"
                                for p, lab in zip(tone_files, ["low", "mid", "high"])))
    result = CliRunner().invoke(cli, ["eval", refs["clap"], "--task", "zeroshot", "--data", str(manifest),
                                      "--templates", "sound", "--json", "--no-baselines"])
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(result.stdout)["metrics"]["model"]["top1"] <= 100


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written

@pytest.mark.parametrize("source, says", [
    ("open_clip:ViT-B-32@no_such_tag", "its tags: openai, laion400m_e31"),
    ("open_clip:ViT-B-33@laion2b_s34b_b79k", "close ones: ViT-B-32"),
    ("open_clip:ViT-B-32", "write open_clip:ARCH@PRETRAINED"),
    ("open_clip:ViT-B-32@laion2b_s34b_b79k", "not in the local cache"),   # offline (conftest): a cache miss
    ("hf:no-such-org/no-such-clip", "run once online to fill the HF cache"),
])
def test_bad_reference_is_one_line_and_writes_nothing(tmp_path, source, says):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", source, str(out)])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert line.startswith("error: ") and "\n" not in line and says in line, line
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_model_without_the_towers_of_a_reference_is_refused(tiny_text_model, refs, tmp_path):
    result = CliRunner().invoke(cli, ["eval", f"hf:{tiny_text_model}", "--task", "zeroshot", "--data", "x.jsonl"])
    assert result.exit_code == 2 and "is a 'bert' checkpoint" in result.output
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": "x.wav", "label": "a"}) + "\n")
    result = CliRunner().invoke(cli, ["eval", refs["clip"], "--task", "zeroshot", "--data", str(manifest),
                                      "--modality", "audio"])
    assert result.exit_code == 2 and "not a non-text tower of this model (image)" in result.output.strip().splitlines()[-1]


def test_base_model_must_be_an_export_not_a_source(refs):
    from fuse.base.errors import ModelFileError
    from fuse.recipes.export_format import read_config

    with pytest.raises(ModelFileError, match="export it first"):
        read_config(refs["clip"])
