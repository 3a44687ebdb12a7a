"""Is a file what its extension says? The header check `fuse data pack` makes before copying a file
into a shard, as a decoder would begin: the first 512 bytes of the bytes pack reads anyway (no
second read, a few microseconds a file, so packing stays fast at millions of items). A text file named ``secrets.jpg``, or any file a manifest points at by mistake,
is refused with one line instead of being packed byte for byte.

Known media extensions must carry their format's signature; any other extension (a plugin's own
kind) must at least not be plain text, since no media format is.
"""

from __future__ import annotations


def _riff(form: bytes):
    return lambda h: h[:4] == b"RIFF" and h[8:12] == form


def _mp3(h: bytes) -> bool:
    return h[:3] == b"ID3" or (len(h) > 1 and h[0] == 0xFF and h[1] & 0xE0 == 0xE0)


def _iso_bmff(h: bytes) -> bool:  # mp4, mov, m4a, heic: a box size then its type
    return h[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


_EBML = b"\x1a\x45\xdf\xa3"  # webm, mkv
_MPEG_PS = (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")
SIGNATURES = {
    "png": lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"),
    "jpg": lambda h: h.startswith(b"\xff\xd8\xff"),
    "jpeg": lambda h: h.startswith(b"\xff\xd8\xff"),
    "gif": lambda h: h[:6] in (b"GIF87a", b"GIF89a"),
    "webp": _riff(b"WEBP"),
    "bmp": lambda h: h.startswith(b"BM"),
    "tif": lambda h: h[:4] in (b"II*\x00", b"MM\x00*"),
    "tiff": lambda h: h[:4] in (b"II*\x00", b"MM\x00*"),
    "ppm": lambda h: h[:2] in (b"P3", b"P6"),
    "pgm": lambda h: h[:2] in (b"P2", b"P5"),
    "pbm": lambda h: h[:2] in (b"P1", b"P4"),
    "flac": lambda h: h.startswith(b"fLaC"),
    "wav": _riff(b"WAVE"),
    "mp3": _mp3,
    "ogg": lambda h: h.startswith(b"OggS"),
    "oga": lambda h: h.startswith(b"OggS"),
    "opus": lambda h: h.startswith(b"OggS"),
    "aiff": lambda h: h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC"),
    "aif": lambda h: h[:4] == b"FORM" and h[8:12] in (b"AIFF", b"AIFC"),
    "au": lambda h: h.startswith(b".snd"),
    "mp4": _iso_bmff, "m4v": _iso_bmff, "mov": _iso_bmff, "m4a": _iso_bmff,
    "webm": lambda h: h.startswith(_EBML), "mkv": lambda h: h.startswith(_EBML),
    "avi": _riff(b"AVI "),
    "mpg": lambda h: h[:4] in _MPEG_PS, "mpeg": lambda h: h[:4] in _MPEG_PS,
    "npy": lambda h: h.startswith(b"\x93NUMPY"),
}
HEAD = 512


def looks_like_text(head: bytes) -> bool:
    """Plain text: no NUL byte and valid UTF-8 (a cut multi-byte character at the end allowed)."""
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3


def header_ok(head: bytes, ext: str) -> bool:
    """Whether bytes that begin a file (``HEAD`` of them suffice) begin a ``.ext`` file."""
    head = head[:HEAD]
    check = SIGNATURES.get(ext)
    if check is not None:
        return check(head)
    return bool(head) and not looks_like_text(head)
