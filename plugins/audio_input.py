"""Turning AudioClips into fixed-rate, bounded-length waveforms for audio encoders."""

from __future__ import annotations

import torch

from fuse.media import AudioClip, check_audio


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
