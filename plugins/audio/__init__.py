"""Audio in fuse: the `audio` input kind and the `hf-audio` and `torchaudio` encoders.

One plugin package, registered through the entry point ``audio = "fuse.plugins.audio"``:

- ``clip``: AudioClip, reading and checking files, the `audio` input kind, and ``prepare`` (resample,
  crop, pad) shared by both encoders;
- ``hf``: `hf-audio`, transformers audio encoders, one class per family (frame models, AST, Whisper,
  CLAP) behind one registered name;
- ``whisper_ct2``: reads the CTranslate2 Whisper file that `hf-audio` takes with ``format: ctranslate2``;
- ``ta``: `torchaudio`, torchaudio's wav2vec 2.0 / HuBERT / WavLM models.
"""

from __future__ import annotations

import fuse

from .waveforms import AudioClip, AudioInput, check_audio, prepare, read_audio, receptive_field
from .clap import ClapAudioEncoder  # noqa: F401  (each family registers itself with HFAudioEncoder.families)
from .hf import HFAudioEncoder
from .ta import TorchaudioEncoder
from .whisper import WhisperAudioEncoder  # noqa: F401

__all__ = ["AudioClip", "AudioInput", "HFAudioEncoder", "TorchaudioEncoder", "check_audio", "prepare", "read_audio",
           "receptive_field"]


@fuse.hookimpl
def register_input_kinds(register):
    """The `audio` input kind: manifest values are audio files, read as mono AudioClips."""
    register("audio", AudioInput)


@fuse.hookimpl
def register_encoders(register):
    """`hf-audio` (transformers) and `torchaudio` (torchaudio.pipelines bundles or configs)."""
    register("hf-audio", HFAudioEncoder, modalities=("audio",))
    register("torchaudio", TorchaudioEncoder, modalities=("audio",))
