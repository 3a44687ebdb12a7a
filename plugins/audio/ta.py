"""Audio encoders from torchaudio: wav2vec 2.0, HuBERT and WavLM (`torchaudio.pipelines` bundles).

`bundle: WAV2VEC2_BASE` builds the bundle's architecture and loads its weights with the
bundle's own `get_model()` (a download), or from `checkpoint:` (a local safetensors file or
state dict) with no network. `config:` builds a custom architecture from the arguments of
`torchaudio.models.wav2vec2_model` (or `wavlm_model`); keys left out take the base model's
values. Pooling is the mean over valid frames: these models have no CLS token.

Padding never changes a clip's latent. Wav2vec2/HuBERT with a layer-norm feature extractor
(LV-60k, XLS-R, HuBERT large) take the lengths and mask padded frames. Group-norm extractors
(base models, WAV2VEC2_LARGE) normalise over the whole time axis, so padding would leak into
every frame, and torchaudio's WavLM takes no lengths: those run each group of equal-length
clips unpadded (a batch of 10 s crops is still one call).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

import fuse
from fuse import (Encoder, EncoderInfo, ModelFileError, RecipeError, length_mask, load_state_dict, masked_mean,
                  resolve_path, save_state_dict)

from .waveforms import prepare, receptive_field

# Every other bundle was published under the MIT license (see each bundle's docstring).
NON_COMMERCIAL = {"MMS_FA", "VOXPOPULI_ASR_BASE_10K_DE", "VOXPOPULI_ASR_BASE_10K_EN", "VOXPOPULI_ASR_BASE_10K_ES",
                  "VOXPOPULI_ASR_BASE_10K_FR", "VOXPOPULI_ASR_BASE_10K_IT"}


def bundle_names() -> list[str]:
    """The wav2vec2/HuBERT/WavLM bundles of torchaudio.pipelines, listed when a recipe names an unknown one."""
    from torchaudio import pipelines

    return sorted(n for n in dir(pipelines) if isinstance(getattr(pipelines, n), pipelines.Wav2Vec2Bundle))


class TorchaudioEncoder(Encoder):
    """A torchaudio Wav2Vec2Model (wav2vec 2.0, HuBERT, WavLM); mean over valid frames."""

    class Options(fuse.Options):
        """The recipe's options: a bundle (pretrained) or a config (any size), with local weights for offline runs."""

        bundle: str | None = None                     # torchaudio.pipelines name: WAV2VEC2_BASE, HUBERT_LARGE, ...
        config: dict[str, Any] | None = None          # wav2vec2_model / wavlm_model arguments
        architecture: Literal["wav2vec2", "wavlm"] | None = None  # for config (HuBERT is wav2vec2)
        checkpoint: str | None = None                 # local weights: path or pkg:...; no download
        sample_rate: int | None = pydantic.Field(None, gt=0)  # default: the bundle's, else 16000
        max_seconds: float | None = pydantic.Field(10.0, gt=0)
        num_layers: int | None = None                 # keep only the first k transformer layers
        pooling: Literal["mean"] = "mean"
        normalize_waveform: bool | None = None        # default: the bundle's (large/XLSR models)

    def __init__(self, options: Options):
        super().__init__()
        from torchaudio import models, pipelines

        self.options = o = options
        if (o.bundle is None) == (o.config is None):
            raise RecipeError("torchaudio: give exactly one of bundle: (a torchaudio.pipelines name, e.g. "
                              "WAV2VEC2_BASE) or config: (arguments of torchaudio.models.wav2vec2_model).")
        if o.bundle is not None:
            bundle = getattr(pipelines, o.bundle, None)
            if not isinstance(bundle, pipelines.Wav2Vec2Bundle):
                raise RecipeError(f"bundle: torchaudio.pipelines has no wav2vec2/HuBERT/WavLM bundle '{o.bundle}'; "
                                  f"available: {', '.join(bundle_names())}.")
            arch = "wavlm" if bundle._model_type == "WavLM" else "wav2vec2"
            if o.architecture not in (None, arch):
                raise RecipeError(f"architecture: {o.architecture} contradicts bundle {o.bundle} ({arch}); drop it.")
            params, rate, normalize = dict(bundle._params), bundle.sample_rate, bundle._normalize_waveform
            source, license = o.bundle, "CC-BY-NC-4.0" if o.bundle in NON_COMMERCIAL else "MIT"
        else:
            arch = o.architecture or "wav2vec2"
            base = pipelines.WAVLM_BASE if arch == "wavlm" else pipelines.WAV2VEC2_BASE
            params, rate, normalize, license = {**base._params, **o.config}, 16000, False, ""
            source = "config (random weights)"
        params["aux_num_out"] = None  # ASR bundles' CTC head: not part of the encoder
        factory = models.wavlm_model if arch == "wavlm" else models.wav2vec2_model
        if o.bundle is not None and o.checkpoint is None:
            self.model = self._download(bundle, o.bundle)
        else:
            try:
                self.model = factory(**params)
            except (TypeError, ValueError) as exc:
                raise RecipeError(f"config: {exc}. Keys are the arguments of torchaudio.models.{factory.__name__}: "
                                  f"{', '.join(inspect.signature(factory).parameters)}.") from None
        self.model.aux = None
        if o.checkpoint is not None:
            self._load(resolve_path(o.checkpoint), source)
            source = o.checkpoint
        layers = self.model.encoder.transformer.layers
        if o.num_layers is not None:
            if not 0 < o.num_layers <= len(layers):
                raise RecipeError(f"num_layers: {o.num_layers} is out of range; {source} has {len(layers)} "
                                  f"transformer layers (use 1..{len(layers)}).")
            self.model.encoder.transformer.layers = layers[:o.num_layers]
            params["encoder_num_layers"] = o.num_layers
        self.arch, self.params = arch, params
        self.rate = o.sample_rate or rate
        self.normalize = normalize if o.normalize_waveform is None else o.normalize_waveform
        self.by_length = params["extractor_mode"] == "group_norm" or arch == "wavlm"
        convs = [layer.conv for layer in self.model.feature_extractor.conv_layers]
        self.min_samples = receptive_field([c.kernel_size[0] for c in convs], [c.stride[0] for c in convs])
        self.info = EncoderInfo(modality="audio", input="audio", dim=params["encoder_embed_dim"], source=source,
                                license=license, sample_rate=self.rate)

    @staticmethod
    def _download(bundle, name: str) -> torch.nn.Module:
        from torchaudio.models import Wav2Vec2Model

        try:
            model = bundle.get_model()
        except (OSError, RuntimeError) as exc:
            raise ModelFileError(f"Could not download the weights of torchaudio bundle {name} ({exc}). Offline? Give "
                                 f"checkpoint: <local safetensors or state dict file> with bundle: {name}.") from None
        return model if isinstance(model, Wav2Vec2Model) else model.model  # unwrap waveform normalisation

    def _load(self, path: Path, source: str) -> None:
        state = {k: v for k, v in load_state_dict(path).items() if not k.startswith("aux.")}
        try:
            missing, unexpected = self.model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches
            detail = "; ".join([line.strip() for line in str(exc).splitlines() if "size mismatch" in line][:3])
            raise ModelFileError(f"checkpoint: {path} does not fit the architecture of {source}: {detail}. "
                                 "Give the bundle or config these weights were trained with.") from None
        if missing or unexpected:
            raise ModelFileError(f"checkpoint: {path} does not fit the architecture of {source}: missing "
                                 f"{missing[:5]}, unexpected {unexpected[:5]}. Is it a torchaudio Wav2Vec2Model "
                                 "state dict (not fairseq or transformers naming)?")

    # -- preprocessing -------------------------------------------------------------------
    def preprocess(self, raw: list) -> dict[str, torch.Tensor]:
        waves = [prepare(c, self.rate, self.options.max_seconds, random_crop=self.training,
                         min_samples=self.min_samples) for c in raw]
        if self.normalize:  # per clip over its own samples, as in pretraining (never over the padding)
            waves = [F.layer_norm(w, w.shape) for w in waves]
        return {"waveforms": pad_sequence(waves, batch_first=True), "lengths": torch.tensor([len(w) for w in waves])}

    # -- forward -----------------------------------------------------------------------------
    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        waves, lengths = batch["waveforms"], batch["lengths"]
        if self.by_length:
            out: dict[int, torch.Tensor] = {}
            for n in lengths.unique().tolist():
                idx = (lengths == n).nonzero()[:, 0]
                out.update(zip(idx.tolist(), self.model(waves[idx, :n])[0]))
            seqs = [out[i] for i in range(len(lengths))]
            tokens, frames = pad_sequence(seqs, batch_first=True), torch.tensor([len(s) for s in seqs])
        else:
            tokens, frames = self.model(waves, lengths)
        frames = frames.to(tokens.device).long().clamp(1, tokens.shape[1])
        return tokens, length_mask(frames, tokens.shape[1])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return masked_mean(*self.forward_tokens(batch))

    def preprocessing_signature(self) -> dict[str, Any]:
        return {"rate": self.rate, "max_seconds": self.options.max_seconds, "normalize_waveform": self.normalize,
                "pooling": self.options.pooling}

    def save(self, directory: Path) -> dict[str, Any]:
        directory.mkdir(parents=True, exist_ok=True)
        save_state_dict(self.model, directory / "model.safetensors")
        (directory / "config.json").write_text(json.dumps({"architecture": self.arch, "config": self.params}, indent=2))
        return {**self.options.model_dump(), "bundle": None, "config": self.params, "architecture": self.arch,
                "checkpoint": "./model.safetensors", "num_layers": None, "sample_rate": self.rate,
                "normalize_waveform": self.normalize}
