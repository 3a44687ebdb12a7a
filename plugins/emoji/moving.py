"""Dataset `moving-emoji`: short clips of one emoji that differ only in how it moves.

Each base emoji gets six clips: growing / shrinking, moving left / moving right, turning
clockwise / turning counter-clockwise, captioned with its name and the motion ("cat face moving
left"). Each clip is one period of a looping motion started at a random phase (a growing emoji
grows, then starts again small; a moving one wraps around the edge; a turning one makes a full
turn), and opposite motions are time reversals of one another. So for both directions the *set*
of frames, and any single frame (the first one too), have the same distribution: no frame and
no order-blind mean of frames can tell growing from shrinking or left from right; only the
order of frames can.

The split is by base emoji, as in the other emoji datasets. Clips are H.264 mp4 written with
PyAV (pip install "fuse-align[video]").

    fuse data build moving-emoji          # 80 emoji x 6 motions = 480 clips, ~20 s on 2 cores
"""

from __future__ import annotations

import random
from pathlib import Path

from pydantic import Field

import fuse

from .render import LICENSE_NOTE, EmojiOptions, caption, rendered_emoji, write_splits

# motion -> (caption phrase, axis, plays the forward trajectory backwards)
MOTIONS = {
    "grows": ("growing", "scale", False),
    "shrinks": ("shrinking", "scale", True),
    "moves-right": ("moving right", "shift", False),
    "moves-left": ("moving left", "shift", True),
    "turns-counter-clockwise": ("turning counter-clockwise", "turn", False),   # PIL's positive angle
    "turns-clockwise": ("turning clockwise", "turn", True),
}


def trajectory(axis: str, rng: random.Random, size: int, frames: int) -> list[tuple[float, float, float, float]]:
    """Forward motion along ``axis`` as (x centre, y centre, emoji size, angle) per frame, all in
    pixels/degrees of a ``size`` canvas: one period of a looping motion from a random phase."""
    s = size * rng.uniform(0.6, 0.7)   # the glyph fills about 2/3 of a rendered emoji image
    x = size * rng.uniform(0.45, 0.55)
    y = size * rng.uniform(0.45, 0.55)
    a = rng.uniform(0, 360)
    phase = rng.random()
    steps = [((t / frames) + phase) % 1.0 - 0.5 for t in range(frames)]   # a sawtooth in -0.5 .. 0.5
    if axis == "scale":   # 0.67x -> 1.5x of the size, geometrically, then again from 0.67x
        return [(x, y, s * 1.5 ** (2 * u), 0.0) for u in steps]
    if axis == "shift":   # once across the canvas, wrapping around its edges
        return [((x + size * u) % size, y, s, 0.0) for u in steps]
    return [(x, y, s, a + 360 * u) for u in steps]                   # a full turn


def draw(emoji_image, x: float, y: float, s: float, angle: float, size: int):
    """The emoji (RGB on white) scaled to ``s`` px, rotated by ``angle`` degrees, centred at (x, y)."""
    from PIL import Image

    im = emoji_image.resize((max(1, round(s)),) * 2, Image.Resampling.LANCZOS)
    if angle:
        im = im.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")
    canvas = Image.new("RGB", (size, size), "white")
    for wrap in (-size, 0, size):   # an emoji crossing an edge shows on both sides (a moving clip wraps)
        canvas.paste(im, (round(x + wrap - im.width / 2), round(y - im.height / 2)))
    return canvas


def write_mp4(path: Path, images: list, fps: int) -> None:
    """Frames as an H.264 mp4 (near-lossless, so codec artefacts do not mark one end of a clip)."""
    try:
        import av
    except ImportError:
        raise fuse.DataError('The moving-emoji dataset writes video with PyAV: pip install "fuse-align[video]"') from None
    import numpy as np

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "12", "preset": "fast"})
        stream.width, stream.height, stream.pix_fmt = images[0].width, images[0].height, "yuv420p"
        for im in images:
            frame = av.VideoFrame.from_ndarray(np.asarray(im), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


class MovingEmoji(fuse.DatasetBuilder):
    """Emoji clips that differ only in motion (grows/shrinks, left/right, clockwise/counter), split by base emoji."""

    modalities = ("video", "text")
    version = 1   # 1: looping motions from a random phase (no frame tells the direction)

    class Options(EmojiOptions):
        max_items: int = Field(80, ge=2, le=83)      # emoji to animate; 6 clips each (at most 498)
        clip_size: int = Field(112, ge=32)           # clip width and height in pixels
        frames: int = Field(16, ge=2)
        fps: int = Field(8, ge=1)

    def build(self, out_dir: Path) -> dict[str, Path]:
        from PIL import Image

        opts = self.options
        rng = random.Random(opts.seed)
        (out_dir / "clips").mkdir(parents=True, exist_ok=True)
        splits = {"train": [], "val": []}
        for e in rendered_emoji(out_dir, opts, "animating emoji"):
            name = caption(e.data["en"], e.seq)
            with Image.open(out_dir / e.image) as im:
                still = im.convert("RGB")
            for motion, (phrase, axis, backwards) in MOTIONS.items():
                path = trajectory(axis, rng, opts.clip_size, opts.frames)
                frames = [draw(still, *p, opts.clip_size) for p in path]
                if backwards:
                    frames.reverse()
                clip = f"clips/{e.ident}-{motion}.mp4"
                write_mp4(out_dir / clip, frames, opts.fps)
                splits[e.split].append({"id": f"{e.ident}-{motion}", "video": clip, "text": f"{name} {phrase}",
                                        "group": e.group, "motion": motion})
        return write_splits(out_dir, splits, "moving-emoji (6 motions per emoji)",
                            LICENSE_NOTE + "Clips: the rendered emoji moved with Pillow, encoded with PyAV (FFmpeg).\n")
