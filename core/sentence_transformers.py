"""Old name of ``fuse.model.sentence_transformers``, kept because one-tower exports written before the
package layout name ``fuse.sentence_transformers.FuseHead`` in their modules.json and must still load."""

from fuse.model.sentence_transformers import FuseHead

__all__ = ["FuseHead"]
