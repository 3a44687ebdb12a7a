"""Choosing what to align before any training: which encoders (``selection``: CKA and mutual k-NN
between candidate towers' latents, ``similarity``: the measures themselves) and which data
(``curate``: a concept-balanced subset of a caption set), with their printed tables
(``selection_report``).

It never touches an aligned model: it reads frozen encoders' latents through the latent store.

Imports: ``fuse.base``, ``fuse.recipes``, ``fuse.data``.
"""
