"""Data: manifests, tar shards and packing, dataset builders, screening bad media, loading a plan's
splits (``load``), and the latent store frozen towers are cached in (``store``, ``cache``).

May import: ``fuse.base``, ``fuse.recipes``.
"""
