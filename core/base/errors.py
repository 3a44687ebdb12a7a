"""Errors a user can cause. The CLI prints them as one line and exits with code 2.

Every message should say what went wrong, where (file, field path, record), what is
available and how to fix it. Anything that is not a FuseError is a bug in fuse or a plugin
and keeps its traceback.
"""


class FuseError(Exception):
    """Base class for errors caused by input the user controls."""


class RecipeError(FuseError):
    """A recipe file or command-line override is invalid."""


class PluginError(FuseError):
    """A plugin is unknown, duplicated, or misbehaves when registering."""


class DataError(FuseError):
    """A manifest, media file or dataset is missing, empty or unreadable."""


class ModelFileError(FuseError):
    """A saved model, checkpoint or weights file is missing or corrupt."""


class StorageError(FuseError):
    """A file or folder cannot be written: no space, no permission, a file in the way."""


class TrainingDiverged(FuseError):
    """The loss or the gradients became non-finite (NaN or Inf) during training."""


def decode_utf8(raw: bytes, path, error: type[FuseError]) -> str:
    """``raw`` as UTF-8 text; a bad byte is one ``error`` naming the file, line and byte offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise error(f"{path}: line {line}, byte offset {exc.start}: byte 0x{raw[exc.start]:02x} is not UTF-8; "
                    "save the file as UTF-8.") from None
