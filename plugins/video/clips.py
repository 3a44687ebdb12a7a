"""The `video` input kind: video files opened with PyAV, frames sampled uniformly on demand.

Reading a manifest value only opens the file and counts its frames (demuxing packets, no
decoding), so a bad, empty or truncated file fails early with the file's name. Frames are
decoded later, by the encoder's ``preprocess``, and only as far as the last frame it asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import fuse

INSTALL = 'pip install "fuse-align[video]"'
SKIP_HINT = "or leave such files out with a log: data.bad_media: skip in a recipe, --skip-bad-media in fuse eval"


def _av():
    try:
        import av
    except ImportError:
        raise fuse.DataError(f"Reading video needs PyAV (package `av`), which is not installed: {INSTALL}") from None
    return av


def frame_indices(total: int, n: int) -> list[int]:
    """``n`` frame indices spread uniformly over ``total`` frames, first and last included
    (one frame: the middle one). A clip shorter than ``n`` repeats frames, so every clip gives
    exactly ``n``."""
    if total < 1 or n < 1:
        raise ValueError(f"cannot sample {n} frames from {total}")
    if n == 1:
        return [(total - 1) // 2]
    return [round(i * (total - 1) / (n - 1)) for i in range(n)]


@dataclass(frozen=True)
class VideoClip:
    """A readable video file: where it is and what its video stream holds. Frames are not kept."""

    path: str
    frames: int          # decodable frames in the first video stream
    fps: float
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.frames / self.fps if self.fps else 0.0

    def sample(self, n: int) -> list:
        """``n`` frames taken uniformly over the clip (``frame_indices``), as RGB PIL images.

        Decodes sequentially from the start and stops after the last index it needs."""
        av = _av()
        wanted = frame_indices(self.frames, n)
        targets, last = set(wanted), wanted[-1]
        picked: dict[int, object] = {}
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for i, frame in enumerate(container.decode(stream)):
                    if i in targets:
                        picked[i] = frame.to_image()   # RGB PIL image
                    if i >= last:
                        break
        except (av.FFmpegError, OSError) as exc:
            raise fuse.DataError(f"Could not decode video {self.path}: {exc}. Drop the record ({SKIP_HINT}).") from None
        if len(picked) < len(targets):
            raise fuse.DataError(f"Video {self.path} ended after {len(picked)} of the frames it lists "
                                 f"({self.frames}): truncated? Re-encode it or drop the record ({SKIP_HINT}).")
        return [picked[i] for i in wanted]


def open_clip(path: str) -> VideoClip:
    """Open ``path``, check it has a video stream with frames, and count them (demuxing only)."""
    av = _av()
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise fuse.DataError(f"Video file {path} has no video stream (audio only?). Drop the record "
                                     f"({SKIP_HINT}).")
            stream = container.streams.video[0]
            if stream.codec_context is None:  # a file cut short: its stream lost its codec parameters
                raise fuse.DataError(f"Unreadable video {path}: its video stream has no codec parameters "
                                     f"(truncated?). Re-encode it or drop the record ({SKIP_HINT}).")
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = sum(1 for packet in container.demux(stream) if packet.size)
    except FileNotFoundError:
        raise fuse.DataError(f"Video file not found: {path}") from None
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise fuse.DataError(f"Unreadable video {path}: {exc}. Re-encode it (e.g. H.264 mp4) or drop the record "
                             f"({SKIP_HINT}).") from None
    if frames == 0:
        raise fuse.DataError(f"Video file {path} has no frames. Drop the record ({SKIP_HINT}).")
    return VideoClip(path, frames, fps, width, height)


class VideoInput(fuse.InputKind):
    """Video files (mp4, webm, avi, ... whatever PyAV's FFmpeg decodes), read as VideoClips."""

    files = True
    extensions = ("mp4", "webm", "avi", "mkv", "mov", "m4v", "mpg", "mpeg", "gif")

    def read(self, value: str) -> VideoClip:
        return open_clip(value)
