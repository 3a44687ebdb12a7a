"""Dataset `spoken-emoji`: emoji names spoken by espeak-ng, with their text and image.

One build serves audio–text and audio–image recipes: each record has the emoji's name
(`text`), its rendering (`image`, as in the `emoji` dataset) and the name spoken by several
voices (`audio`, a list: several clips of one item, like AudioCaps' several captions). The
split is by base emoji, the same as the `emoji` dataset's; `train-a` and `train-b` are two
disjoint halves of train (also by base emoji) for binding three towers through pairs that never
share an item (recipes/audio_image_text.yaml). espeak-ng (GPL-3, from
`espeakng-loader`) runs as a library at build time only; its 22,050 Hz output is resampled
to 16 kHz with torchaudio's band-limited resampler.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np
import torch

import fuse
from fuse import DataError

from .render import LICENSE_NOTE, EmojiOptions, caption, in_val, rendered_emoji, write_splits

ESPEAK_RATE_PARAMETER = 1     # espeakRATE in speak_lib.h
AUDIO_OUTPUT_SYNCHRONOUS = 2


class Espeak:
    """Minimal ctypes binding: text -> int16 samples at the library's rate (22,050 Hz)."""

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError:
            raise DataError('The spoken-emoji dataset needs espeak-ng: pip install "fuse-align[demo]" '
                            "(package espeakng-loader).") from None
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_dir = os.path.dirname(espeakng_loader.get_data_path()).encode()
        self.rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_dir, 0)
        if self.rate <= 0:
            raise DataError("espeak-ng failed to initialise (its data folder is missing?); reinstall espeakng-loader.")
        self._chunks: list[np.ndarray] = []

        def collect(wav, n, _events):
            if wav and n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = self._CALLBACK(collect)  # keep a reference: C holds only a pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    def speak(self, text: str, voice: str, words_per_minute: int) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise DataError(f"espeak-ng has no voice '{voice}'; try en-us, en, en-GB-x-rp, en-us+f3 or en+m3.")
        self.lib.espeak_SetParameter(ESPEAK_RATE_PARAMETER, words_per_minute, 0)
        self._chunks = []
        data = text.encode() + b"\0"
        self.lib.espeak_Synth(data, len(data), 0, 0, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)


class SpokenEmoji(fuse.DatasetBuilder):
    """Emoji names spoken by espeak-ng voices, with the emoji's name and image (audio, text, image)."""

    modalities = ("audio", "text", "image")
    version = 1  # 1: adds the train-a / train-b halves

    class Options(EmojiOptions):
        voices: list[str] = ["en-us", "en"]              # espeak-ng voice names; "en" is British English
        words_per_minute: int = 160
        sample_rate: int = 16000

    def build(self, out_dir: Path) -> dict[str, Path]:
        import soundfile as sf
        import torchaudio.transforms as AT

        opts = self.options
        tts = Espeak()
        (out_dir / "audio").mkdir(parents=True, exist_ok=True)
        resample = AT.Resample(tts.rate, opts.sample_rate)  # band-limited; kernel built once
        splits = {"train": [], "val": []}
        for e in rendered_emoji(out_dir, opts, "speaking emoji names"):
            text = caption(e.data["en"], e.seq)
            clips = []
            for voice in opts.voices:
                wave = tts.speak(text, voice, opts.words_per_minute)
                if wave.size == 0 or np.abs(wave).max() == 0:
                    raise DataError(f"espeak-ng produced silence for '{text}' with voice {voice}.")
                loud = np.flatnonzero(np.abs(wave) > 64)  # trim espeak's leading/trailing silence
                wave = wave[max(0, loud[0] - 400):loud[-1] + 400]
                wave16 = resample(torch.from_numpy(wave.astype(np.float32) / 32768.0))
                name = f"audio/{e.ident}-{voice.replace('+', '_')}.flac"
                sf.write(out_dir / name, wave16.numpy(), opts.sample_rate, subtype="PCM_16")
                clips.append(name)
            record = {"id": e.ident, "audio": clips, "text": text, "image": e.image, "group": e.group}
            splits[e.split].append(record)
        # Two disjoint halves of train, by base emoji: audio-text pairs from one and image-text
        # pairs from the other never share an item, so audio-image retrieval is never trained
        # directly nor through a shared item (the binding check of docs/modalities.md).
        splits["train-a"] = [r for r in splits["train"] if not in_val(r["group"], opts.seed + 1, 0.5)]
        splits["train-b"] = [r for r in splits["train"] if in_val(r["group"], opts.seed + 1, 0.5)]
        return write_splits(out_dir, splits, f"spoken-emoji ({len(opts.voices)} voices per item)",
                            LICENSE_NOTE + "Speech: synthesised with espeak-ng (GPL-3.0) at build time.\n")
