"""The plugin API and the foundations every layer shares.

Owns: the component interfaces (``interfaces``, ``options``), input kinds (``inputs``), the hook
specifications, registries and plugin manager, the helpers plugins share (latents, losses,
collectives, weights, Hugging Face loading, paths, shard references) and the small file-system
and device helpers (``atomic``, ``devices``, ``errors``).

May import: nothing else of fuse. Everything above builds on it; ``fuse.__all__`` re-exports the
part plugins use.
"""
