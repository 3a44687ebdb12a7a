"""Reading raw inputs named in manifests: images (PIL), text (str) and audio clips.

Errors name the file and the manifest record so a user can fix the data, not the code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError

SILENCE = 1e-4   # peak amplitude below which a clip counts as silent (about -80 dBFS)
SKIP_HINT = "or leave such files out with a log: data.bad_media: skip in a recipe, --skip-bad-media in fuse eval"


@dataclass
class AudioClip:
    """Mono waveform at its file's sample rate; encoders resample to their own rate."""

    waveform: torch.Tensor  # float32 [T], in [-1, 1]
    sample_rate: int
    path: str = ""


def read_image(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise DataError(f"Image file not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"Unreadable image {path}: {exc}. Re-export it as PNG or JPEG, or drop the record "
                        f"({SKIP_HINT}).") from None


def read_audio(path: str) -> AudioClip:
    import numpy as np
    import soundfile as sf

    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise DataError(f"Audio file not found: {path}") from None
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError for bad files
        if not Path(path).exists():
            raise DataError(f"Audio file not found: {path}") from None
        raise DataError(f"Unreadable audio {path}: {exc}. Convert it to wav or flac, or drop the record "
                        f"({SKIP_HINT}).") from None
    mono = np.ascontiguousarray(data.mean(axis=1))
    return check_audio(AudioClip(torch.from_numpy(mono), int(rate), path))


def check_audio(clip: AudioClip, silence: float = SILENCE) -> AudioClip:
    """An empty or silent-only clip is an error naming the file: it would only teach the heads
    that silence matches some caption."""
    where = clip.path or "<in-memory clip>"
    if clip.waveform.numel() == 0:
        raise DataError(f"Empty audio file (0 samples): {where}. Drop the record ({SKIP_HINT}).")
    if clip.waveform.abs().max() < silence:
        raise DataError(f"Audio file is silent throughout: {where}. Drop the record ({SKIP_HINT}).")
    return clip


READERS = {"image": read_image, "audio": read_audio, "text": lambda value: value}


def read(kind: str, value):
    """Read one manifest value as the raw input an encoder of this input kind expects."""
    return READERS[kind](value)
