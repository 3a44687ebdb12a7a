"""Turning AudioClips into fixed-rate, bounded-length waveforms for audio encoders."""

from __future__ import annotations

import torch

from fuse.errors import DataError
from fuse.media import AudioClip


def prepare(clip: AudioClip, rate: int, max_seconds: float | None, random_crop: bool,
            silence_threshold: float = 1e-4) -> torch.Tensor:
    """Resample to ``rate``; crop to ``max_seconds`` (random window when training, centre in eval).

    A clip that is silent throughout is an error naming the file: it would only teach the
    heads that silence matches some caption.
    """
    import torchaudio.functional as AF

    wave = clip.waveform.float()
    if wave.numel() == 0:
        raise DataError(f"Empty audio clip: {clip.path or '<in memory>'}")
    if wave.abs().max() < silence_threshold:
        raise DataError(f"Audio clip is silent throughout: {clip.path or '<in memory>'}. Remove it from the manifest.")
    if clip.sample_rate != rate:
        wave = AF.resample(wave, clip.sample_rate, rate)
    if max_seconds is not None:
        limit = int(max_seconds * rate)
        if wave.shape[0] > limit:
            extra = wave.shape[0] - limit
            start = int(torch.randint(0, extra + 1, ()).item()) if random_crop else extra // 2
            wave = wave[start:start + limit]
    return wave
