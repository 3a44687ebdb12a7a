"""Turning AudioClips into fixed-rate, bounded-length waveforms for audio encoders."""

from __future__ import annotations

import torch

from fuse.media import AudioClip, check_audio


def prepare(clip: AudioClip, rate: int, max_seconds: float | None, random_crop: bool) -> torch.Tensor:
    """Resample to ``rate``; crop to ``max_seconds`` (random window when training, centre in eval).

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
    return wave
