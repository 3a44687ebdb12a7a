"""Video: the `video` input kind (PyAV), the `video-frames` encoder (an image encoder on uniformly
sampled frames, latents [B, N, D]) and the `temporal` head (mean, first-frame or order-aware
attention pooling). See docs/video.md."""

import fuse

from .clips import VideoInput
from .encoder import VideoFramesEncoder
from .temporal import TemporalHead


@fuse.hookimpl
def register_input_kinds(register):
    register("video", VideoInput)


@fuse.hookimpl
def register_encoders(register):
    register("video-frames", VideoFramesEncoder, modalities=("video",))


@fuse.hookimpl
def register_heads(register):
    register("temporal", TemporalHead)
