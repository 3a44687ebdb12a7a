"""The built-in input kinds every fuse install has: images (files, read with PIL) and text (inline).

Audio and video register from their own plugins (fuse.plugins.audio, fuse.plugins.video);
a third-party package adds a kind the same way (docs/plugins.md).
"""

from __future__ import annotations

import fuse


def to_rgb(im):
    """An image as 8-bit RGB. 16-bit and 32-bit grayscale (mode I;16, I) and float (F) images are scaled
    to 0..255 first: PIL's convert("RGB") clips them, so a 16-bit gradient would come out white."""
    import numpy as np
    from PIL import Image

    if im.mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return im.convert("RGB")
    a = np.asarray(im, dtype=np.float64)
    top = a.max(initial=0.0)
    if im.mode.startswith("I;16") or top > 255:
        full = 65535.0 if top <= 65535 else top
    else:
        full = 1.0 if im.mode == "F" and top <= 1.0 else 255.0
    return Image.fromarray(np.clip(a / full * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")


class ImageInput(fuse.InputKind):
    """Image files (PNG, JPEG, WebP, ...), read as RGB PIL images (high bit depths scaled, see ``to_rgb``).
    An image over ``data.max_image_pixels`` is refused from its header, before it is decoded."""

    files = True
    extensions = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm", "pgm", "pbm")

    def read(self, value: str):
        import warnings

        from PIL import Image, UnidentifiedImageError

        limit = self.limits["max_image_pixels"]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # checked here, against the recipe's
                try:
                    im = Image.open(fuse.open_value(value))
                finally:
                    Image.MAX_IMAGE_PIXELS = previous
            with im:
                if im.width * im.height > limit:
                    raise fuse.DataError(f"Image {value} is {im.width}x{im.height} = {im.width * im.height} pixels, "
                                         f"over data.max_image_pixels ({limit}): too large to decode safely. Shrink "
                                         "it, raise data.max_image_pixels if you trust it, or drop the record "
                                         "(data.bad_media: skip).")
                return to_rgb(im)
        except FileNotFoundError:
            raise fuse.DataError(f"Image file not found: {value}") from None
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
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
