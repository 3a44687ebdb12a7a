"""CLAP's audio tower in `hf-audio` (`laion/clap-htsat-unfused`, `laion/larger_clap_general`, ...).

Only the audio tower (HTSAT) is kept, with CLAP's audio projection when the checkpoint has one
(a full `ClapModel` or a `ClapAudioModelWithProjection`). Clips are resampled to 48 kHz and
cropped to at most the feature extractor's `max_length_s` (10 s), so its random windows for
longer clips (`rand_trunc`, and the random chunks of `fusion`) never apply and encoding is
deterministic; `is_longer` is therefore false for every clip (the extractor would mark a random
one). HTSAT has no CLS token; its output is a (frequency x time) map, handed on as tokens in
time order. `pooling: mean` averages the tokens that hold the clip (the zero padding after it
is excluded; repeated copies from `repeatpad` count), `pooling: pooler` is the tower's own
average over the whole window, the vector CLAP projects. `projection: true` maps the pooled
vector (and, for fusion modules, each token) through CLAP's audio projection, so the latents
start in CLAP's audio-text space (unnormalised; `projection_dim` wide).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fuse import length_mask, masked_mean, save_hf

from .hf import HFAudioEncoder, load_transformers, model_config


class ClapAudioEncoder(HFAudioEncoder):
    """CLAP's audio tower (HTSAT): the mean of the tokens that hold the clip or CLAP's pooler, optionally
    through CLAP's audio projection."""

    kind = "clap"
    model_types = ("clap", "clap_audio_model")
    has_pooler = True

    def load(self, options: HFAudioEncoder.Options) -> None:
        config, auto_cls = model_config(options), None
        if config.model_type == "clap_audio_model":  # a lone audio tower: AutoModel does not map it
            from transformers import ClapAudioModel, ClapAudioModelWithProjection

            with_projection = "ClapAudioModelWithProjection" in (config.architectures or ())
            auto_cls = ClapAudioModelWithProjection if with_projection else ClapAudioModel
        model, self.processor = load_transformers(options, auto_cls)
        # ClapModel and ClapAudioModelWithProjection hold the tower as audio_model; the text tower is dropped.
        self.model = getattr(model, "audio_model", model)
        self.projection = getattr(model, "audio_projection", None)

    def latent_dim(self) -> int:
        if self.options.projection:
            return self.projection.linear2.out_features
        return self.model.audio_encoder.num_features

    def preprocess(self, raw: list) -> dict[str, torch.Tensor]:
        # Never longer than the extractor's window: it would pick random chunks.
        window = self.processor.nb_max_samples / self.rate
        seconds = window if self.options.max_seconds is None else min(self.options.max_seconds, window)
        arrays, lengths = self.waveforms(raw, seconds)
        feats = self.processor(arrays, sampling_rate=self.rate, return_tensors="pt")
        # No clip exceeds the window; the extractor (truncation: fusion) marks a random one as longer.
        return {"input_features": feats["input_features"].float(),
                "is_longer": torch.zeros(len(arrays), 1, dtype=torch.bool), "lengths": lengths}

    def _tower(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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
        tokens, mask, _ = self._tower(batch)
        return (self.projection(tokens) if self.options.projection else tokens), mask

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens, mask, pooled = self._tower(batch)
        pooled = pooled if self.options.pooling == "pooler" else masked_mean(tokens, mask)
        return self.projection(pooled) if self.options.projection else pooled

    def preprocessing_signature(self) -> dict[str, Any]:
        # projection only here, so that the other families keep their cache keys
        return {**super().preprocessing_signature(), "projection": self.options.projection}

    def save(self, directory: Path) -> dict[str, Any]:
        if self.projection is None:
            return super().save(directory)
        from transformers import ClapAudioModelWithProjection

        # The audio tower and its projection only, in an empty shell whose two modules are replaced by ours.
        with torch.device("meta"):
            model = ClapAudioModelWithProjection(self.model.config)
        model.audio_model, model.audio_projection = self.model, self.projection
        save_hf(directory, model, self.processor)
        return {**self.options.model_dump(), "model": "./", "revision": None}
