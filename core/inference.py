"""Using an aligned model: towers as modules, embeddings of many inputs, similarity.

``fuse.load(path)`` returns an ``AlignedModel``; its ``embed``, ``similarity``, ``search`` and
``towers`` are thin wrappers over this module, and `fuse embed` / `fuse search` call the same
functions, so the CLI and the Python API give the same numbers.
"""

from __future__ import annotations

import glob
import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DataError, FuseError, decode_utf8
from .manifest import jsonl_records
from .inputs import input_kind

LIST_SUFFIXES = (".txt", ".lst")  # a file-kind INPUT with one of these suffixes lists paths, one per line


class Tower(nn.Module):
    """One modality's encoder and head (and the shared fusion, if any) as a single module:
    ``tower(batch)`` maps a preprocessed batch to L2-normalised embeddings, ``tower.embed(inputs)``
    takes raw inputs (file paths, text, PIL images). It shares its parameters with the model."""

    def __init__(self, model, modality: str):
        super().__init__()
        model._encoder(modality)  # an unknown modality names the towers there are
        self.modality = modality
        self.encoder, self.head, self.fusion = model.encoders[modality], model.heads[modality], model.fusion
        self.training = model.training  # the mode its (shared) modules are in: eval for a loaded model

    def preprocess(self, inputs: list) -> dict[str, torch.Tensor]:
        """Raw inputs (or values: paths, text) -> the encoder's batch tensors, on the CPU."""
        kind = self.encoder.info.input
        return self.encoder.preprocess([input_kind(kind).read(v) if isinstance(v, str) else v for v in inputs])

    def forward(self, batch) -> torch.Tensor:
        """L2-normalised embeddings [B, D] of a preprocessed batch, or of a list of raw inputs
        (preprocessed first); gradients flow, for fine-tuning."""
        if isinstance(batch, (list, tuple)):
            batch = self.preprocess(list(batch))
        device = next(self.head.parameters()).device
        batch = {k: v.to(device) for k, v in batch.items()}
        if self.fusion is None:
            z = self.head(self.encoder(batch))
        else:
            tokens, mask = self.encoder.forward_tokens(batch)
            z = self.fusion(self.modality, self.head(tokens.float()), mask)
        return F.normalize(z.float(), dim=-1)

    @torch.no_grad()
    def embed(self, inputs: list, batch_size: int = 32) -> torch.Tensor:
        """L2-normalised embeddings [N, D] of raw inputs, in batches, in eval mode."""
        was = self.training
        self.eval()
        out = [self(self.preprocess(inputs[i:i + batch_size])) for i in range(0, len(inputs), batch_size)]
        self.train(was)
        return torch.cat(out) if out else torch.empty(0, self.head.out_dim)


def model_fingerprint(model) -> str:
    """What makes two models give the same embeddings: every tower's registered names and
    preprocessing, the embedding size and every weight (encoders, heads, fusion). An index
    records it, so one built by another model is refused instead of searched."""
    from .cache import weights_fingerprint

    blob = json.dumps({"embed_dim": model.embed_dim,
                       "towers": {m: {"encoder": model.specs[m]["encoder"].name, "head": model.specs[m]["head"].name,
                                      "preprocessing": model.encoders[m].preprocessing_signature()}
                                  for m in model.modalities},
                       "fusion": model.fusion_spec.name if model.fusion_spec else None}, sort_keys=True, default=str)
    return hashlib.sha256((blob + weights_fingerprint(model)).encode()).hexdigest()[:32]


def embed_values(model, modality: str, values: list, batch_size: int = 32, cache_dir: Path | None = None,
                 num_workers: int = 0, progress: bool = False) -> torch.Tensor:
    """Embeddings [N, D] on the CPU. With ``cache_dir`` and values that are all paths or text, the
    encoder's latents come from (and go to) the latent cache training uses, keyed by its weights
    and preprocessing, so inputs a run already encoded are not encoded again."""
    latents = model.encode(modality, values, batch_size, progress, num_workers=num_workers, cache_dir=cache_dir)
    return model.project(modality, latents).cpu()


def as_embeddings(model, x) -> torch.Tensor:
    """An embedding tensor ([D] or [N, D]) as [N, D]; a ``(modality, inputs)`` pair is embedded first."""
    if isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str):
        return model.embed(x[0], list(x[1]))
    if not isinstance(x, torch.Tensor):
        raise FuseError("similarity() takes embedding tensors or (modality, inputs) pairs, e.g. "
                        "model.similarity(('text', ['a cat']), ('image', ['cat.png']))")
    return x.reshape(1, -1) if x.dim() == 1 else x


def similarity(model, a, b) -> torch.Tensor:
    """Cosine similarities [Na, Nb] between two sets of embeddings (or (modality, inputs) pairs)."""
    a, b = as_embeddings(model, a), as_embeddings(model, b)
    if a.shape[-1] != b.shape[-1]:
        raise FuseError(f"similarity(): embeddings of size {a.shape[-1]} and {b.shape[-1]}; both must come from "
                        f"this model ({model.embed_dim}-d).")
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


# ---------------------------------------------------------------- what the user names on the command line

def is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def folder_files(folder: Path, kind) -> list[str]:
    """Every file under ``folder`` (recursively, sorted) that the input kind reads, skipping hidden
    files and folders (such as .fuse-index)."""
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).parts
        if p.is_file() and not any(part.startswith(".") for part in rel) and kind.accepts(str(p)):
            files.append(str(p.resolve()))
    return files


def read_lines(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file (a list of strings or of paths)."""
    return [line.strip() for line in decode_utf8(path.read_bytes(), path, DataError).splitlines() if line.strip()]


def collect_inputs(kind_name: str, inputs: list[str], stdin=None) -> list[str]:
    """The values ``fuse embed`` / ``fuse search`` read from INPUTS.

    File kinds (image, audio, ...): files, folders (every file of the kind inside), globs, or a
    ``.txt`` list of paths (relative to the list). Inline kinds (text): an existing file gives its
    lines, ``-`` (or no INPUTS) reads stdin, anything else is the string itself."""
    kind = input_kind(kind_name)
    values: list[str] = []
    if not inputs and not kind.files:
        inputs = ["-"]
    for item in inputs:
        if not kind.files:
            if item == "-":
                stream = stdin or sys.stdin
                if stream.isatty():
                    raise DataError(f"No {kind_name} inputs: give strings or a text file, or pipe text into stdin.")
                values += [line.strip() for line in stream.read().splitlines() if line.strip()]
            elif Path(item).is_file():
                values += read_lines(Path(item))
            else:
                values.append(item)
            continue
        path = Path(item).expanduser()
        if is_glob(item):
            found = sorted(p for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not found:
                raise DataError(f"No file matches {item}; check the pattern (quote it so the shell leaves it to fuse).")
            values += [str(Path(p).resolve()) for p in found]
        elif path.is_dir():
            found = folder_files(path, kind)
            if not found:
                raise DataError(f"{path} holds no {kind_name} files; give a folder, files or a glob that has some.")
            values += found
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES and not kind.accepts(str(path)):
            listed = [(path.parent / v).resolve() for v in read_lines(path)]
            missing = [str(p) for p in listed if not p.is_file()]
            if missing:
                raise DataError(f"{path} lists {len(missing)} files that do not exist, e.g. {missing[0]}; fix the list.")
            values += [str(p) for p in listed]
        elif path.is_file():
            values.append(str(path.resolve()))
        else:
            raise DataError(f"{kind_name} input not found: {item}. Give existing files, a folder, a glob or a .txt "
                            "list of paths.")
    if not values:
        raise DataError(f"No {kind_name} inputs: give files, a folder, a glob"
                        f"{' or a .txt list' if kind.files else ', strings, a text file or stdin'}.")
    return values


def manifest_values(path: Path, modality: str, kind_name: str) -> list[str]:
    """The unique values of one modality in a JSONL manifest (file values resolved against it)."""
    kind = input_kind(kind_name)
    values: dict[str, None] = {}
    fields: dict[str, None] = {}
    for line_no, record in jsonl_records(path):
        fields.update(dict.fromkeys(record))
        items = record.get(modality, [])
        for v in items if isinstance(items, list) else [items]:
            if not isinstance(v, str) or not v:
                raise DataError(f"{path}:{line_no}: '{modality}' must be a non-empty string or list of strings.")
            values[str((path.parent / v).resolve()) if kind.files else v] = None
    if not values:
        raise DataError(f"{path} has no '{modality}' values (fields seen: {', '.join(fields) or 'none'}).")
    return list(values)


# ---------------------------------------------------------------- `fuse embed`: many inputs to one file

def embed_to_file(model, modality: str, values: list[str], out: Path, cache_dir: Path | None = None,
                  batch_size: int = 32, shard_rows: int = 8192, progress: bool = True) -> Path:
    """Embed ``values`` into ``out`` (.safetensors: tensor ``embeddings`` [N, D], the ids as JSON in its
    metadata; .npy: the array, ids in ``<out>.ids.json``), rows in input order.

    The work goes through an index in ``<out>.parts`` (shards written as they finish), so a large
    job that is interrupted resumes where it stopped; the folder is removed once ``out`` is written."""
    import shutil

    from .atomic import atomic_path, save_tensors, write_text
    from .index import read_meta, update_index

    out = Path(out)
    if out.suffix.lower() not in (".safetensors", ".npy"):
        raise FuseError(f"--out {out}: the file must end in .safetensors or .npy.")
    parts = out.with_name(out.name + ".parts")
    fingerprint = model_fingerprint(model)
    try:
        meta = read_meta(parts)
        if meta is not None and (meta["model"]["fingerprint"] != fingerprint or meta["modality"] != modality):
            shutil.rmtree(parts)  # an unfinished job of another model or modality: nothing to reuse
    except FuseError:
        shutil.rmtree(parts, ignore_errors=True)  # a damaged unfinished job: start over
    index = update_index(model, modality, values, parts, cache_dir=cache_dir, batch_size=batch_size,
                         shard_rows=shard_rows, model_path=getattr(model, "path", ""), fingerprint=fingerprint,
                         progress=progress, desc="embedding")
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
