"""The built-in input kinds every fuse install has: images (files, read with PIL) and text (inline).

Audio and video register from their own plugins (fuse.plugins.audio, fuse.plugins.video);
a third-party package adds a kind the same way (docs/plugins.md).
"""

from __future__ import annotations

import fuse


class ImageInput(fuse.InputKind):
    """Image files (PNG, JPEG, WebP, ...), read as RGB PIL images."""

    files = True
    extensions = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pbm")

    def read(self, value: str):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(fuse.open_value(value)) as im:
                return im.convert("RGB")
        except FileNotFoundError:
            raise fuse.DataError(f"Image file not found: {value}") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise fuse.DataError(f"Unreadable image {value}: {exc}. Re-export it as PNG or JPEG, or drop the "
                                 "record (or leave such files out with a log: data.bad_media: skip in a recipe, "
                                 "--skip-bad-media in fuse eval).") from None


class TextInput(fuse.InputKind):
    """Strings written in the manifest itself; an encoder's tokenizer batches them."""

    files = False
    extensions = ("txt",)

    def read(self, value: str) -> str:
        return value

    def check(self, value: str) -> None:
        if not value.strip():
            raise fuse.DataError("empty text value")


@fuse.hookimpl
def register_input_kinds(register):
    register("image", ImageInput)
    register("text", TextInput)
