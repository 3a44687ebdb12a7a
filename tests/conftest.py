"""Shared fixtures: tiny config-built encoders, a small real image–text manifest, recipes.

Nothing here mocks an encoder: the tiny models are real timm/transformers architectures
built from configs (random weights), and the shapes data set is real rendered images with
captions that describe them, so alignment is learnable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_configure(config):
    """Child processes (torchrun ranks, the CLI in subprocesses) get their own temporary folder, removed when
    the session ends: a rank killed on purpose (the SIGTERM tests) cannot clean up what its libraries put in
    TMPDIR (wandb, which `import timm` imports when installed, makes two folders at import; torchelastic
    its run folders). This process keeps the system one, so pytest's tmp_path stays where it always is."""
    import tempfile

    tempfile.tempdir = tempfile.gettempdir()
    config.fuse_child_tmp = tempfile.mkdtemp(prefix="fuse-tests-children-")
    os.environ["TMPDIR"] = config.fuse_child_tmp


def pytest_unconfigure(config):
    import shutil

    folder = getattr(config, "fuse_child_tmp", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)

COLORS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 210, 20)}
SHAPES = ("circle", "square", "triangle")


def _draw(shape: str, rgb, size: int = 64, jitter: int = 0):
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    a, b = 12 + jitter, size - 12 - jitter
    if shape == "circle":
        d.ellipse([a, a, b, b], fill=rgb)
    elif shape == "square":
        d.rectangle([a, a, b, b], fill=rgb)
    else:
        d.polygon([(size // 2, a), (a, b), (b, b)], fill=rgb)
    return im


def write_shapes_manifest(root: Path, copies: int = 2, captions_per_image: int = 1) -> dict[str, Path]:
    """Coloured shapes with captions; train and val hold different renderings."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "img").mkdir(exist_ok=True)
    splits = {}
    # val renderings sit between the train ones (odd vs even jitter): new items, same distribution
    for split, jitters in (("train", [2 * j for j in range(copies)]), ("val", [1])):
        lines = []
        for color, rgb in COLORS.items():
            for shape in SHAPES:
                for j in jitters:
                    name = f"img/{split}-{color}-{shape}-{j}.png"
                    _draw(shape, rgb, jitter=j % 16).save(root / name)
                    caps = [f"a {color} {shape}", f"{shape} coloured {color}", f"the {color} {shape} on white"]
                    text = caps[0] if captions_per_image == 1 else caps[:captions_per_image]
                    lines.append(json.dumps({"id": f"{color}-{shape}-{j}", "image": name, "text": text}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        splits[split] = root / f"{split}.jsonl"
    return splits


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    return make_tiny_text_model(tmp_path_factory.mktemp("tiny-bert"))


def make_tiny_text_model(d: Path, dropout: float = 0.1) -> Path:
    """A 2-layer BERT with a word-level vocabulary, saved as a local HF directory."""
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "the", "on", "white", "coloured",
             *COLORS, *SHAPES]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    tok.save_pretrained(str(d))
    cfg = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=dropout,
                     attention_probs_dropout_prob=dropout)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(str(d), safe_serialization=True)
    return d


@pytest.fixture(scope="session")
def tiny_wav2vec2(tmp_path_factory) -> Path:
    """A 2-layer Wav2Vec2 with a layer-norm feature extractor (it takes an attention mask)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    d = tmp_path_factory.mktemp("w2v")
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=8,
                         num_conv_pos_embedding_groups=2, feat_extract_norm="layer")
    Wav2Vec2Model(cfg).save_pretrained(str(d), safe_serialization=True)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(str(d))
    return d


@pytest.fixture(scope="session")
def shapes_data(tmp_path_factory) -> dict[str, Path]:
    return write_shapes_manifest(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="session")
def trained_shapes_export(tmp_path_factory, tiny_text_model, shapes_data) -> Path:
    """A tiny image-text model trained briefly on the shapes through `fuse train`: its export dir."""
    from click.testing import CliRunner

    from fuse.cli import cli

    tmp = tmp_path_factory.mktemp("trained-shapes")
    recipe = write_recipe(tmp / "r.yaml", tiny_recipe(tmp, tiny_text_model, shapes_data, **{
        "train.epochs": 8, "train.eval_every": 8, "optim.lr": 1e-2, "optim.weight_decay": 0.0,
        "modalities.image.head": {"name": "linear"}}))
    result = CliRunner().invoke(cli, ["train", str(recipe)])
    assert result.exit_code == 0, result.output
    return tmp / "run" / "export"


@pytest.fixture(scope="session")
def twin_exports(tiny_text_model, tmp_path_factory) -> list[Path]:
    """Two exported image-text models (random weights, real architectures) sharing their frozen encoders (tiny
    BERT, a random timm net) with different heads: a leaderboard's two columns, or one model to evaluate."""
    import torch

    from fuse.model.aligned import build_model
    from fuse.model.export import export_model

    torch.manual_seed(0)
    specs = {"image": {"encoder": {"name": "timm", "options": {"model": "test_efficientnet", "pretrained": False}},
                       "head": {"name": "linear"}},
             "text": {"encoder": {"name": "hf-text", "options": {"model": str(tiny_text_model)}},
                      "head": {"name": "linear"}}}
    model = build_model(specs, embed_dim=16).eval()
    tmp = tmp_path_factory.mktemp("models")
    return [export_model(model, tmp / "a" / "export"), export_model(model.with_untrained_heads(seed=1),
                                                                    tmp / "b" / "export")]


def tiny_recipe(tmp_path: Path, text_model: Path, splits: dict[str, Path], **overrides) -> dict:
    recipe = {
        "name": "tiny", "seed": 0, "device": "cpu", "output_dir": str(tmp_path / "run"), "embed_dim": 16,
        "modalities": {
            "image": {"encoder": {"name": "timm", "options": {"model": "test_efficientnet", "pretrained": False}},
                      "head": {"name": "residual-mlp", "options": {"depth": 1, "expansion": 2}}},
            "text": {"encoder": {"name": "hf-text", "options": {"model": str(text_model)}},
                     "head": {"name": "linear"}},
        },
        "objectives": [{"name": "infonce"}],
        "data": {"train": str(splits["train"]), "val": str(splits["val"]), "cache_dir": str(tmp_path / "cache"),
                 "encode_batch_size": 16},
        "optim": {"lr": 3e-3},
        "train": {"batch_size": 8, "epochs": 3, "log_every": 2},
    }
    for key, value in overrides.items():
        node = recipe
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


# ---------------------------------------------------------------- wheels in a fresh venv

def run_ok(*args, **kw):
    """Run a command; a non-zero exit fails the test with its output."""
    import subprocess

    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="session")
def plugin_venv(tmp_path_factory):
    """A fresh venv with the fuse-align wheel and both example plugin wheels installed (built once).

    Heavy dependencies (torch & co.) are borrowed through a .pth file, so nothing is downloaded;
    a path added by a .pth file is not a site dir, so the test env's editable fuse (itself a .pth
    hook) stays inactive there and `import fuse` is the wheel. The examples are built from copies,
    so no build/ or .egg-info is left in the source tree.
    """
    import shutil
    import sys
    import sysconfig

    root = Path(__file__).resolve().parents[1]
    tmp = tmp_path_factory.mktemp("wheels")
    sources = [root] + [shutil.copytree(root / "docs" / "examples" / name, tmp / name,
                                        ignore=shutil.ignore_patterns("build", "*.egg-info"))
                        for name in ("fuse-char-ngrams", "fuse-sensors")]
    for src in sources:
        built = run_ok(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp / "dist", src)
        if src == root:  # what a user's install prints (tests/test_packaging.py reads it)
            (tmp / "fuse-build.log").write_text(built.stdout + built.stderr)
    wheels = sorted((tmp / "dist").glob("*.whl"))
    assert {w.name.split("-")[0] for w in wheels} == {"fuse_align", "fuse_char_ngrams", "fuse_sensors"}
    venv = tmp / "venv"
    run_ok(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    run_ok(py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", *wheels)
    site = run_ok(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    # A test env that itself borrows from another venv has several site-packages dirs: list them all.
    borrowed = [sysconfig.get_paths()["purelib"]] + [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "borrowed.pth").write_text("\n".join(dict.fromkeys(borrowed)) + "\n")
    return venv
