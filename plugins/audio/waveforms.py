"""The `audio` input kind (files read with soundfile into AudioClips), and turning AudioClips into
fixed-rate, bounded-length waveforms for the audio encoders (``prepare``, ``receptive_field``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

import fuse

SILENCE = 1e-4   # peak amplitude below which a clip counts as silent (about -80 dBFS)
SKIP_HINT = "or leave such files out with a log: data.bad_media: skip in a recipe, --skip-bad-media in fuse eval"


@dataclass
class AudioClip:
    """Mono waveform at its file's sample rate; encoders resample to their own rate."""

    waveform: torch.Tensor  # float32 [T], in [-1, 1]
    sample_rate: int
    path: str = ""


def read_audio(path: str) -> AudioClip:
    """A wav/flac/ogg/mp3 file as a mono AudioClip (soundfile: no system FFmpeg needed)."""
    import numpy as np
    import soundfile as sf

    try:
        data, rate = sf.read(fuse.open_value(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise fuse.DataError(f"Audio file not found: {path}") from None
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError for bad files
        if not Path(path).exists() and "#" not in path:
            raise fuse.DataError(f"Audio file not found: {path}") from None
        raise fuse.DataError(f"Unreadable audio {path}: {exc}. Convert it to wav or flac, or drop the record "
                             f"({SKIP_HINT}).") from None
    mono = np.ascontiguousarray(data.mean(axis=1))
    return check_audio(AudioClip(torch.from_numpy(mono), int(rate), path))


def check_audio(clip: AudioClip, silence: float = SILENCE) -> AudioClip:
    """An empty or silent-only clip is an error naming the file: it would only teach the heads
    that silence matches some caption."""
    where = clip.path or "<in-memory clip>"
    if clip.waveform.numel() == 0:
        raise fuse.DataError(f"Empty audio file (0 samples): {where}. Drop the record ({SKIP_HINT}).")
    if clip.waveform.abs().max() < silence:
        raise fuse.DataError(f"Audio file is silent throughout: {where}. Drop the record ({SKIP_HINT}).")
    return clip


class AudioInput(fuse.InputKind):
    """Audio files, read as mono AudioClips at their own sample rate."""

    files = True
    extensions = ("flac", "wav", "mp3", "ogg", "oga", "opus", "aiff", "aif", "au")

    def read(self, value: str) -> AudioClip:
        """A manifest value (a file path) as the clip every audio encoder's ``preprocess`` takes."""
        return read_audio(value)


def receptive_field(kernels, strides) -> int:
    """Samples a stack of 1-D convolutions needs for one output frame (400 for wav2vec 2.0)."""
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field, jump = field + (k - 1) * jump, jump * s
    return field


def prepare(clip: AudioClip, rate: int, max_seconds: float | None, random_crop: bool,
            min_samples: int = 0) -> torch.Tensor:
    """Resample to ``rate``; crop to ``max_seconds`` (random window when training, centre in eval);
    zero-pad at the end to ``min_samples``, so a clip shorter than a frame model's receptive field
    still gives one frame instead of a convolution error.

    Empty and silent clips are errors naming the file (``check_audio``).
    """
    import torchaudio.functional as AF

    wave = check_audio(clip).waveform.float()
    if clip.sample_rate != rate:
        wave = AF.resample(wave, clip.sample_rate, rate)
    if max_seconds is not None:
        limit = int(max_seconds * rate)
        if wave.shape[0] > limit:
            extra = wave.shape[0] - limit
            start = int(torch.randint(0, extra + 1, ()).item()) if random_crop else extra // 2
            wave = wave[start:start + limit]
    if wave.shape[0] < min_samples:
        wave = torch.nn.functional.pad(wave, (0, min_samples - wave.shape[0]))
    return wave
