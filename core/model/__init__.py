"""The aligned model and its uses: the model itself (``aligned``), export and load, embedding
(``embed``, ``embed_file``, ``collect``), indexes and search, encoder-pair selection and curation,
the model card and the sentence-transformers bridge.

May import: ``fuse.base``, ``fuse.recipes``, ``fuse.data``, ``fuse.eval``.
"""
