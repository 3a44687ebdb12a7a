"""Media and numbers read correctly or refused in one line: decompression bombs, 16-bit images,
truncated videos, strict recipe numbers and booleans, duplicate YAML keys and alias bombs."""

from __future__ import annotations

import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_recipe, write_recipe
from PIL import Image

import fuse
from fuse.base.inputs import InputKind
from fuse.cli import cli


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height (8-bit grey) with one tiny IDAT: what a bomb's header says."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


def test_a_decompression_bomb_is_one_line_in_embed(trained_shapes_export, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    png_header_only(folder / "bomb.png", 30000, 30000)
    result = CliRunner().invoke(cli, ["embed", str(trained_shapes_export), "-m", "image", str(folder),
                                      "-o", str(tmp_path / "e.safetensors"), "--no-cache"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = last_line(result.output)
    assert "bomb.png is 30000x30000" in line and "data.max_image_pixels (89478485)" in line


def test_the_pixel_limit_is_a_recipe_option(tmp_path, monkeypatch, tiny_text_model, shapes_data):
    monkeypatch.setattr(InputKind, "limits", dict(InputKind.limits))
    small = tmp_path / "small.png"
    Image.new("RGB", (64, 64), "red").save(small)
    fuse.base.inputs.set_limits(max_image_pixels=1000)
    with pytest.raises(fuse.DataError, match="64x64 = 4096 pixels, over data.max_image_pixels"):
        fuse.input_kind("image").read(str(small))
    fuse.base.inputs.set_limits(max_image_pixels=5000)
    assert fuse.input_kind("image").read(str(small)).size == (64, 64)
    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data, **{"data.max_image_pixels": 100})
    result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / "r.yaml", r))])
    assert result.exit_code == 2 and "over data.max_image_pixels (100)" in last_line(result.output)


def test_a_16_bit_gradient_embeds_like_its_8_bit_version(trained_shapes_export, tmp_path):
    y, x = np.mgrid[0:64, 0:64]
    g16 = ((x * 64 + y) * 16).astype(np.uint16)             # 0..65520, a diagonal-ish gradient
    Image.fromarray(g16).save(tmp_path / "g16.png")          # mode I;16
    Image.fromarray((g16 / 257).round().astype(np.uint8)).save(tmp_path / "g8.png")
    Image.new("RGB", (64, 64), "white").save(tmp_path / "white.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    read = fuse.input_kind("image").read(str(tmp_path / "g16.png"))
    assert abs(np.asarray(read).mean() - np.asarray(Image.open(tmp_path / "g8.png")).mean()) < 1
    model = fuse.load(trained_shapes_export)
    e16, e8, white = model.embed("image", [str(tmp_path / n) for n in ("g16.png", "g8.png", "white.png")])
    cos = torch.nn.functional.cosine_similarity
    assert cos(e16, e8, dim=0) >= 0.99
    assert cos(e16, e8, dim=0) > cos(e16, white, dim=0)


def test_a_truncated_video_is_a_bad_media_line(tmp_path):
    pytest.importorskip("av")
    sys.path.insert(0, str(Path(__file__).parent))
    from test_video import write_clip

    rng = np.random.default_rng(0)
    good = write_clip(tmp_path / "good.mp4", [rng.integers(0, 255, (64, 64, 3), np.uint8) for _ in range(30)])
    data = good.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[:len(data) - 589])  # cut inside the trailing index: no codec parameters left
    with pytest.raises(fuse.DataError, match="truncated.mp4.*truncated"):
        fuse.input_kind("video").check(str(truncated))


@pytest.mark.parametrize("override, field", [
    ("embed_dim=yes", "embed_dim: Value error, expected a number, got the boolean true"),
    ("train.epochs=yes", "train.epochs: Value error, expected a number, got the boolean true"),
    ("seed=99999999999999999999999", "seed: Input should be less than or equal to 9223372036854775807"),
    ("seed=-1", "seed: Input should be greater than or equal to 0"),
    ("optim.eps=.inf", "optim.eps: Input should be a finite number"),
    ("optim.lr=.nan", "optim.lr: Input should be a finite number"),
    ("optim.betas=[0.9,.inf]", "optim.betas.1: Input should be a finite number"),
    ("train.drop_last=1", "train.drop_last: Value error, expected true or false, got 1"),
])
def test_recipe_numbers_and_booleans_are_strict(tmp_path, tiny_text_model, shapes_data, override, field):
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe(tmp_path, tiny_text_model, shapes_data))
    result = CliRunner().invoke(cli, ["train", str(recipe), override, "--dry-run"])
    assert result.exit_code == 2
    assert field in last_line(result.output) and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_key_given_twice_is_refused(tmp_path, tiny_text_model, shapes_data):
    import yaml

    text = yaml.safe_dump(tiny_recipe(tmp_path, tiny_text_model, shapes_data)) + "train:\n  epochs: 99\n"
    (tmp_path / "r.yaml").write_text(text)
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "r.yaml"), "--dry-run"])
    assert result.exit_code == 2
    assert "key 'train' is given twice" in last_line(result.output)


def test_an_alias_bomb_is_refused_before_it_grows(tmp_path, tiny_text_model, shapes_data):
    import resource

    import yaml

    r = tiny_recipe(tmp_path, tiny_text_model, shapes_data)
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    bomb = "\n".join(lines) + "\n"  # 10**9 values once expanded
    text = yaml.safe_dump({k: v for k, v in r.items() if k != "modalities"}) + "bomb_holder:\n" + \
        "".join("  " + line + "\n" for line in bomb.splitlines()) + yaml.safe_dump({"modalities": r["modalities"]})
    (tmp_path / "r.yaml").write_text(text)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "r.yaml"), "--dry-run"])
    assert time.perf_counter() - t0 < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # kB: nothing grew
    assert result.exit_code == 2
    assert "expand it to more than 200000 values" in last_line(result.output)
