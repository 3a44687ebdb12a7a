"""The `sensor` input kind: ``.npy`` files holding float arrays [channels, time].

A manifest value is a path relative to the manifest (``files = True``), so fuse resolves it,
fingerprints it for the latent cache by path, size and mtime, and screens it with ``check``
(``data.bad_media: skip``) without knowing what a sensor is. ``read`` is the only place a file
is opened; ``collate`` batches signals of different lengths for encoders that have no
``preprocess`` of their own.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

import fuse

SKIP_HINT = "or leave such files out with a log: data.bad_media: skip in a recipe, --skip-bad-media in fuse eval"


class SensorInput(fuse.InputKind):
    """Multichannel sensor signals: .npy files of float arrays [channels, time]."""

    files = True
    # Time steps kept per signal: longer ones keep their first max_length steps, so one very
    # long recording cannot blow up a batch. Subclass and register under another name to change it.
    max_length: ClassVar[int] = 4096

    def read(self, value: str) -> np.ndarray:
        try:
            with open(value, "rb") as f:
                magic = f.read(6)
        except FileNotFoundError:
            raise fuse.DataError(f"Sensor file not found: {value}") from None
        except OSError as exc:
            raise fuse.DataError(f"Unreadable sensor file {value}: {exc} ({SKIP_HINT}).") from None
        if magic != b"\x93NUMPY":  # np.load would take any other file for a pickle
            raise fuse.DataError(f"Sensor file {value} is not an .npy file (no NUMPY header). Save each signal "
                                 f"with numpy.save ({SKIP_HINT}).")
        # allow_pickle=False: an .npy file can hold pickled objects, and unpickling runs code.
        try:
            array = np.load(value, allow_pickle=False)
        except ValueError as exc:
            if "pickle" in str(exc):
                raise fuse.DataError(f"Sensor file {value} holds pickled objects, which fuse never loads. "
                                     f"Save a plain float array with numpy.save ({SKIP_HINT}).") from None
            raise fuse.DataError(f"Unreadable sensor file {value}: {exc} ({SKIP_HINT}).") from None
        except Exception as exc:  # a truncated file: OSError, EOFError, ...
            raise fuse.DataError(f"Unreadable sensor file {value}: {exc} ({SKIP_HINT}).") from None
        return check_signal(array, f"Sensor file {value}")

    def collate(self, raw: list[Any]) -> dict[str, torch.Tensor]:
        """Signals [C, T_i] -> {"signal": float [B, C, T_max] zero-padded, "length": long [B]}.

        Arrays given in memory (``model.embed("sensor", [array])``) get the checks files get."""
        signals = [torch.from_numpy(check_signal(np.asarray(r), f"Sensor signal {i} of the batch"))[:, :self.max_length]
                   for i, r in enumerate(raw)]
        channels = sorted({s.shape[0] for s in signals})
        if len(channels) > 1:
            raise fuse.DataError(f"Sensor signals in one batch have different channel counts ({channels}); "
                                 "every signal of a data set needs the same channels.")
        lengths = torch.tensor([s.shape[1] for s in signals], dtype=torch.long)
        batch = torch.zeros(len(signals), channels[0], int(lengths.max()))
        for i, s in enumerate(signals):
            batch[i, :, :s.shape[1]] = s
        return {"signal": batch, "length": lengths}


def check_signal(array: np.ndarray, where: str) -> np.ndarray:
    """A usable signal as float32 [channels, time], or a DataError naming ``where`` (e.g. "Sensor file x.npy")."""
    if array.dtype.kind != "f":
        raise fuse.DataError(f"{where} holds {array.dtype} values; fuse reads float arrays. "
                             f"Convert it (array.astype('float32')) ({SKIP_HINT}).")
    if array.ndim != 2:
        raise fuse.DataError(f"{where} holds an array of shape {tuple(array.shape)}; a signal is "
                             f"[channels, time] ({SKIP_HINT}).")
    if array.size == 0:
        raise fuse.DataError(f"{where} is empty (shape {tuple(array.shape)}) ({SKIP_HINT}).")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise fuse.DataError(f"{where} holds NaN or infinite values, as float32 ({SKIP_HINT}).")
    return array
