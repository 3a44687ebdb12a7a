"""Builders for the standard datasets alignment papers use, read from a local ``root`` (never written):
COCO, Flickr30K, AudioCaps, Clotho, MSR-VTT, img2dataset folders (pairs); ImageNet-1k val, ESC-50 and
any class-per-folder tree (labelled); the zero-shot suite (CoOp's split_zhou layout or torchvision's,
ImageNet's variants, CIFAR and STL-10 from their binary versions). docs/datasets-and-benchmarks.md lists the layouts each expects."""

import fuse

from . import binary, imagenet_variants, suite
from .audio import AudioCaps, Clotho, Esc50
from .captions import Coco, Flickr30k
from .labelled import ClassFolders, ImageNet
from .msrvtt import Msrvtt
from .web import Img2Dataset


@fuse.hookimpl
def register_datasets(register):
    register("coco", Coco, modalities=("image", "text"))
    register("flickr30k", Flickr30k, modalities=("image", "text"))
    register("audiocaps", AudioCaps, modalities=("audio", "text"))
    register("clotho", Clotho, modalities=("audio", "text"))
    register("msrvtt", Msrvtt, modalities=("video", "text"))
    register("img2dataset", Img2Dataset, modalities=("image", "text"))
    register("imagenet", ImageNet, modalities=("image",))
    register("esc50", Esc50, modalities=("audio",))
    register("folder", ClassFolders, modalities=("image", "audio", "video"))
    for module in (suite, imagenet_variants, binary):   # the zero-shot suite, one table per layout family
        for name, cls in module.builders().items():
            register(name, cls, modalities=("image",))
