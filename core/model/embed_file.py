"""`fuse embed`: many inputs to one embeddings file, resumable, and reading such a file back.

The work goes through an embedding index (``fuse.model.index``) in ``OUT.parts``, so an interrupted
job resumes where it stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fuse.base.errors import DataError, FuseError
from fuse.model.embed import model_fingerprint


def embed_to_file(model, modality: str, values: list[str], out: Path, cache_dir: Path | None = None,
                  batch_size: int = 32, shard_rows: int = 8192, progress: bool = True) -> Path:
    """Embed ``values`` into ``out`` (.safetensors: tensor ``embeddings`` [N, D], the ids as JSON in its
    metadata; .npy: the array, ids in ``<out>.ids.json``), rows in input order.

    The work goes through an index in ``<out>.parts`` (shards written as they finish), so a large
    job that is interrupted resumes where it stopped; the folder is removed once ``out`` is written."""
    import shutil

    from fuse.base.atomic import atomic_path, save_tensors, write_text
    from fuse.model.index import IndexOptions, read_meta, update_index

    out = Path(out)
    if out.suffix.lower() not in (".safetensors", ".npy"):
        raise FuseError(f"--out {out}: the file must end in .safetensors or .npy.")
    parts = out.with_name(out.name + ".parts")
    check_embed_target(out, parts)
    fingerprint = model_fingerprint(model)
    try:
        meta = read_meta(parts)
        if meta is not None and (meta["model"]["fingerprint"] != fingerprint or meta["modality"] != modality):
            shutil.rmtree(parts)  # an unfinished job (ours) of another model or modality: nothing to reuse
    except FuseError:
        shutil.rmtree(parts, ignore_errors=True)  # a damaged unfinished job of ours: start over
    index = update_index(model, modality, values, parts,
                         IndexOptions(cache_dir=cache_dir, batch_size=batch_size, shard_rows=shard_rows,
                                      model_path=getattr(model, "path", ""), fingerprint=fingerprint,
                                      progress=progress, desc="embedding"))
    position = {v: i for i, v in enumerate(index.values)}
    emb = index.embeddings[torch.tensor([position[v] for v in values], dtype=torch.long)].contiguous()
    if out.suffix.lower() == ".npy":
        import numpy as np

        with atomic_path(out) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, emb.numpy())
        write_text(out.with_name(out.name + ".ids.json"), json.dumps(values))
    else:
        save_tensors({"embeddings": emb}, out, metadata={"ids": json.dumps(values), "modality": modality,
                                                        "model": str(getattr(model, "path", ""))})
    shutil.rmtree(parts, ignore_errors=True)
    (parts.parent / f".{parts.name}.lock").unlink(missing_ok=True)
    return out


def check_embed_target(out: Path, parts: Path) -> None:
    """fuse replaces only what it wrote: ``out`` must be new or an embeddings file fuse embed wrote, and
    ``OUT.parts`` new or fuse embed's own resume folder (marked; ``fuse.base.owned``)."""
    from fuse.base.owned import owner
    from fuse.model.index import fuse_index_files

    if out.is_symlink() or (out.exists() and not out.is_file()):
        raise FuseError(f"--out {out} exists and is not a file; choose a new file name.")
    if out.exists() and not _written_by_embed(out):
        raise FuseError(f"--out {out} exists and is not an embeddings file fuse embed wrote, so fuse will not "
                        "replace it; choose a new file name.")
    if parts.exists() and any(parts.iterdir()) and (owner(parts) or {}).get("kind") != "index" \
            and not fuse_index_files(parts):  # an unfinished job of a fuse from before markers
        raise FuseError(f"{parts} exists and is not fuse embed's resume folder (no fuse marker), so fuse will not "
                        "use or remove it; move it away or choose another --out.")


def _written_by_embed(out: Path) -> bool:
    """An embeddings file fuse embed wrote: .safetensors with its ids; .npy with its ids file beside."""
    if out.suffix.lower() == ".npy":
        return out.with_name(out.name + ".ids.json").is_file()
    try:
        read_embeddings_file(out)
        return True
    except DataError:
        return False


def read_embeddings_file(path: Path) -> tuple[torch.Tensor, list[str]]:
    """(embeddings, ids) of a file `fuse embed` wrote; safetensors only (nothing is unpickled)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            ids = json.loads((f.metadata() or {}).get("ids", "null"))
            emb = f.get_tensor("embeddings")
    except Exception as exc:
        raise DataError(f"{path} is not an embeddings file written by fuse embed ({str(exc).splitlines()[0]}).") from None
    if not isinstance(ids, list) or len(ids) != emb.shape[0]:
        raise DataError(f"{path}: its ids do not match its {emb.shape[0]} embeddings; embed the inputs again.")
    return emb, ids
