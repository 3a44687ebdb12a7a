"""A reference model and a fuse export in one leaderboard, on the zero-shot suite and COCO: the command a user
runs to put "your model" next to CLIP. The reference's zero-shot column is CLIP's own number: its EuroSAT top-1
equals top-1 computed here with transformers' CLIPModel itself and clip_benchmark's class names and templates
(prompt ensembling as CLIP does it), labels from torchvision's sorted class folders, not through fuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import dataset_fixtures as fx
import suite_fixtures as sf
from fuse.cli import cli
from reference_fixtures import make_clip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite-and-coco")
    images, labels = sf.cifar_arrays(20, 10)
    sf.cifar10_binary(root / "cifar10", images, labels)
    sf.eurosat(root / "eurosat")
    fx.write_coco(root / "coco")
    return root, images, labels


def _clip_top1(clip_dir: Path, eurosat: Path) -> float:
    """EuroSAT top-1 of a CLIPModel by the reference recipe: clip_benchmark's names and templates, each prompt's
    text feature normalised, averaged per class, normalised; images through CLIP's own processor."""
    import clip_benchmark
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    data = Path(clip_benchmark.__file__).parent / "datasets"
    names = json.loads((data / "en_classnames.json").read_text())["eurosat"]
    templates = json.loads((data / "en_zeroshot_classification_templates.json").read_text())["eurosat"]
    folders = sorted(p.name for p in eurosat.iterdir())   # torchvision's class order
    files = sorted(eurosat.glob("*/*.jpg"))
    labels = torch.tensor([folders.index(f.parent.name) for f in files])
    model, proc = CLIPModel.from_pretrained(str(clip_dir)).eval(), CLIPProcessor.from_pretrained(str(clip_dir))
    with torch.no_grad():
        classes = []
        for name in names:
            t = model.get_text_features(**proc(text=[tp.format(c=name) for tp in templates], return_tensors="pt",
                                                padding=True))
            c = torch.nn.functional.normalize(getattr(t, "pooler_output", t), dim=-1).mean(0)
            classes.append(c / c.norm())
        pixels = proc(images=[Image.open(f).convert("RGB") for f in files], return_tensors="pt")["pixel_values"]
        z = model.get_image_features(pixel_values=pixels)
        z = torch.nn.functional.normalize(getattr(z, "pooler_output", z), dim=-1)
    return float(((z @ torch.stack(classes).T).argmax(1) == labels).float().mean() * 100)


def test_reference_and_export_in_one_leaderboard_on_the_suite_and_coco(root, trained_shapes_export, tmp_path):
    root, _, _ = root
    clip = make_clip(tmp_path / "clip")
    out = tmp_path / "board"
    result = CliRunner().invoke(cli, ["eval", f"hf:{clip}", str(trained_shapes_export), "--benchmark", "zeroshot,coco",
                                      "--root", str(root), "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    board = json.loads((out / "leaderboard.json").read_text())
    assert (out / "leaderboard.md").is_file() and (out / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    models = list(board["models"])
    assert len(models) == 2 and models[0].startswith("hf:")
    rows = {(r["benchmark"], r["key"]): r["values"] for r in board["rows"]}
    assert {b for b, _ in rows} >= {"cifar10", "eurosat", "coco"}
    assert all(v is not None for values in rows.values() for v in values.values())
    assert rows[("eurosat", "top1")][models[0]] == pytest.approx(_clip_top1(clip, root / "eurosat" / "eurosat" / "2750"), abs=1e-6)
