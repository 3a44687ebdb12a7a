"""fuse-sensors: a third-party fuse plugin that adds an input kind fuse has never heard of.

Multichannel sensor signals, stored as ``.npy`` files of float arrays [channels, time], become
a modality fuse can align with text, with no change to fuse itself:

- input kind ``sensor`` (``inputs.py``): reads and checks the files, batches them (pad/crop);
- encoder ``sensor-conv`` (``encoder.py``): a small 1-D conv net, trained with the heads;
- dataset ``sensor-captions`` (``dataset.py``): synthetic signals and captions that describe them.

Everything here uses only names in ``fuse.__all__``.
"""

import fuse

from .dataset import SensorCaptions
from .encoder import SensorConv
from .inputs import SensorInput

__all__ = ["SensorCaptions", "SensorConv", "SensorInput"]


@fuse.hookimpl
def register_input_kinds(register):
    register("sensor", SensorInput)


@fuse.hookimpl
def register_encoders(register):
    register("sensor-conv", SensorConv, modalities=("sensor",))


@fuse.hookimpl
def register_datasets(register):
    register("sensor-captions", SensorCaptions, modalities=("sensor", "text"))
