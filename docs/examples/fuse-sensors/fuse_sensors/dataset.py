"""Dataset `sensor-captions`: synthetic multichannel signals and captions that describe them.

Each item is one waveform (sine, square, sawtooth or smoothed noise), slow or fast, whose
amplitude rises or falls, on one channel of a few; the other channels carry faint noise.
Its caption says exactly that: "a fast square wave on channel 2 with rising amplitude".
Lengths vary, so batches are padded and the encoder's masking matters. The same options give
the same files, byte for byte.

    fuse data build sensor-captions                     # 400 items, ~1 s
    fuse data build sensor-captions -o seed=1 -o items=800
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

import fuse

SHAPES = ("sine", "square", "sawtooth", "noise")
SPEEDS = {"slow": (1.5, 3.0), "fast": (8.0, 12.0)}   # cycles over the whole signal
ENVELOPES = {"rising": (0.15, 1.0), "falling": (1.0, 0.15)}
BACKGROUND = 0.05                                      # noise level on every channel


class SensorCaptions(fuse.DatasetBuilder):
    """Synthetic sensor signals (.npy) with captions naming waveform, speed, envelope and channel."""

    modalities = ("sensor", "text")

    class Options(fuse.Options):
        items: int = Field(400, ge=4)
        val_fraction: float = Field(0.2, gt=0, lt=1)
        channels: int = Field(4, gt=0)
        min_length: int = Field(192, gt=8)        # time steps per signal, drawn per item
        max_length: int = Field(320, gt=8)
        seed: int = 0

        @model_validator(mode="after")
        def _lengths(self):
            if self.min_length > self.max_length:
                raise ValueError(f"min_length ({self.min_length}) is above max_length ({self.max_length})")
            return self

    def build(self, out_dir: Path) -> dict[str, Path]:
        o = self.options
        rng = np.random.default_rng(o.seed)
        (out_dir / "signals").mkdir(parents=True, exist_ok=True)
        n_val = max(1, round(o.items * o.val_fraction))
        val = set(rng.permutation(o.items)[:n_val].tolist())
        lines = {"train": [], "val": []}
        for i in range(o.items):
            shape = SHAPES[rng.integers(len(SHAPES))]
            speed = list(SPEEDS)[rng.integers(len(SPEEDS))]
            envelope = list(ENVELOPES)[rng.integers(len(ENVELOPES))]
            channel = int(rng.integers(o.channels))
            signal = synthesize(rng, shape, speed, envelope, channel, o.channels,
                                int(rng.integers(o.min_length, o.max_length + 1)))
            name = f"signals/sensor-{i:04d}.npy"
            np.save(out_dir / name, signal, allow_pickle=False)
            wave = "noise" if shape == "noise" else f"{shape} wave"
            article = "" if shape == "noise" else "a "
            record = {"id": f"sensor-{i:04d}", "sensor": name,
                      "text": f"{article}{speed} {wave} on channel {channel + 1} with {envelope} amplitude",
                      "shape": shape, "speed": speed, "envelope": envelope, "channel": channel + 1}
            lines["val" if i in val else "train"].append(json.dumps(record))
        splits = {}
        for split, rows in lines.items():
            splits[split] = out_dir / f"{split}.jsonl"
            splits[split].write_text("\n".join(rows) + "\n")
        return splits


def synthesize(rng: np.random.Generator, shape: str, speed: str, envelope: str, channel: int, channels: int,
               length: int) -> np.ndarray:
    """One signal float32 [channels, length]: the waveform on ``channel``, faint noise everywhere."""
    t = np.arange(length) / length
    cycles = rng.uniform(*SPEEDS[speed])
    phase = 2 * np.pi * (cycles * t + rng.uniform())
    if shape == "sine":
        wave = np.sin(phase)
    elif shape == "square":
        wave = np.sign(np.sin(phase))
    elif shape == "sawtooth":
        wave = 2 * ((phase / (2 * np.pi)) % 1.0) - 1
    else:  # noise smoothed over about a quarter of a "cycle": slow noise wanders, fast noise jitters
        width = max(1, round(length / cycles / 4))
        wave = np.convolve(rng.standard_normal(length + width), np.ones(width) / width, mode="valid")[:length]
        wave = wave / np.abs(wave).max()
    signal = BACKGROUND * rng.standard_normal((channels, length))
    signal[channel] += rng.uniform(0.7, 1.0) * np.linspace(*ENVELOPES[envelope], length) * wave
    return signal.astype(np.float32)
