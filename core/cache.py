"""Latent caching: a frozen encoder sees each input once, ever.

Latents of one modality's values are stored as safetensors shards in a folder keyed by a hash
of everything that changes them: the encoder's registered name and options, a fingerprint of
its weights, its preprocessing, and the values themselves (file size and mtime for files).
Later epochs and later runs read the folder; training on cached latents never runs encoders.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset

from .atomic import atomic_dir, locked, save_tensors, sweep_stale, write_text
from .checkpoints import tensors_hash
from .errors import DataError
from .inputs import input_kind, read_value
from .latents import Tokens

SHARD_ROWS = 65536
CACHE_FORMAT = 2  # 2: each shard's size, shape, content hash and finiteness in meta.json


def weights_fingerprint(module: torch.nn.Module) -> str:
    """Hash of every parameter and buffer, so changed weights never reuse stale latents."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def values_fingerprint(kind: str, values: list[str]) -> str:
    """Hash of what identifies each value (for files: path, size and mtime; see InputKind.identity)."""
    h = hashlib.sha256()
    identity = input_kind(kind).identity
    for v in values:
        h.update(identity(v).encode())
        h.update(b"\n")
    return h.hexdigest()


def encode_autocast(device: torch.device) -> torch.dtype | None:
    """The autocast dtype encoding runs under: bf16 on CUDA devices that support it, else none (fp32)."""
    device = torch.device(device)
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None


def cache_key(encoder, spec: dict, values: list[str], weights: str | None = None, tokens: bool = False,
              device: torch.device | str = "cpu") -> str:
    """Hash of everything that changes a frozen encoder's latents of these values (its spec, weights,
    preprocessing and inference path, the autocast dtype encoding uses on ``device``, the values)."""
    blob = json.dumps({
        "encoder": spec,
        "tokens": tokens,
        "weights": weights or weights_fingerprint(encoder),
        "preprocessing": encoder.preprocessing_signature(),
        "values": values_fingerprint(encoder.info.input, values),
        # only when encoding autocasts (CUDA bf16): fp32 keys stay what they were
        **({"autocast": str(dtype)} if (dtype := encode_autocast(device)) is not None else {}),
    }, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class ValuesDataset(Dataset):
    """Manifest values of one modality, read as raw inputs (PIL images, text, AudioClip)."""

    def __init__(self, kind: str, values: list):
        self.kind, self.values = kind, values

    def __len__(self):
        return len(self.values)

    def __getitem__(self, i):
        return read_value(self.kind, self.values[i])


def encode_values(encoder, values: list, device: torch.device, batch_size: int = 64, num_workers: int = 0,
                  desc: str | None = None, tokens: bool = False):
    """Run a (frozen) encoder over values: float32 latents [N, D] on the CPU, or (tokens=True)
    fp16 Tokens [N, T, D] for fusion modules.

    Encoding runs under ``torch.inference_mode`` (no autograd bookkeeping at all), with pinned
    host batches and bf16 autocast on CUDA (see ``encode_autocast``; part of the cache key)."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    # Its own generator: iterating a DataLoader draws a seed, and drawing it from the global RNG
    # would make training depend on whether the latents came from the cache or were encoded.
    loader = DataLoader(ValuesDataset(encoder.info.input, values), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=encoder.preprocess, generator=torch.Generator(),
                        pin_memory=device.type == "cuda")
    dtype = encode_autocast(device)
    was_training = encoder.training
    encoder.eval()
    out = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        for batch in tqdm(loader, desc=desc, disable=desc is None, unit="batch"):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if tokens:
                values_, mask = encoder.forward_tokens(batch)
                out.append(Tokens(values_.half().cpu(), mask.cpu()))
            else:
                out.append(encoder(batch).float().cpu())
    encoder.train(was_training)
    # Concatenated outside inference mode: the result is an ordinary tensor training may index.
    if tokens:
        return Tokens.cat(out)
    return torch.cat(out) if out else torch.empty(0, encoder.info.dim)


def write_cache(folder: Path, latents, spec: dict, tokens: bool) -> None:
    """Shards + meta.json under a unique temp folder, published by rename. Each shard's entry records
    its size, shape, content hash and whether every value is finite (so reading never has to scan)."""
    with atomic_dir(folder) as tmp:
        rows, shards = len(latents), []
        for i in range(0, max(rows, 1), SHARD_ROWS):
            name = f"shard-{i // SHARD_ROWS:05d}.safetensors"
            part = latents[i:i + SHARD_ROWS]
            tensors = {"latents": part.values, "mask": part.mask} if tokens else {"latents": part}
            tensors = {k: v.contiguous() for k, v in tensors.items()}
            save_tensors(tensors, tmp / name)
            values = tensors["latents"]
            shards.append({"name": name, "bytes": (tmp / name).stat().st_size, "shape": list(values.shape),
                           "sha256": tensors_hash(tensors), "finite": bool(torch.isfinite(values).all())})
        write_text(tmp / "meta.json", json.dumps({"format": CACHE_FORMAT, "rows": rows, "tokens": tokens,
                                                  "encoder": spec, "shards": shards}, indent=2, default=str))


def read_cache(folder: Path, rows: int, tokens: bool):
    """The cached latents, or the reason the folder cannot be used (truncated, mismatched, corrupt)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        return None, f"meta.json is unreadable ({exc})"
    if meta.get("format") != CACHE_FORMAT:
        return None, "it was written by an older fuse"
    if meta.get("rows") != rows:
        return None, f"it holds {meta.get('rows')} rows for {rows} values"
    parts = []
    for entry in meta["shards"]:
        file = folder / entry["name"]
        size = file.stat().st_size if file.exists() else None
        if size is None:
            return None, f"{entry['name']} is missing"
        if size != entry["bytes"]:
            return None, f"{entry['name']} is {size} bytes, not {entry['bytes']} (truncated)"
        try:
            tensors = load_file(str(file))
        except Exception as exc:
            return None, f"{entry['name']} is unreadable ({str(exc).splitlines()[0]})"
        if list(tensors["latents"].shape) != entry["shape"] or tensors_hash(tensors) != entry["sha256"]:
            return None, f"{entry['name']} does not match its recorded shape and hash"
        if not entry["finite"]:
            raise DataError(f"Latent cache {folder}: {entry['name']} holds NaN/Inf latents (the frozen encoder gave "
                            "non-finite outputs for some inputs); check the data and the encoder's precision.")
        parts.append(tensors)
    latents = (Tokens.cat([Tokens(t["latents"], t["mask"]) for t in parts]) if tokens
               else torch.cat([t["latents"] for t in parts]))
    return latents, None


def cached_latents(encoder, spec: dict, values: list[str], cache_dir: Path, device: torch.device,
                   batch_size: int = 64, num_workers: int = 0, label: str = "", tokens: bool = False):
    """Latents for ``values`` (pooled, or Tokens), read from the cache or encoded once and written there.

    Building holds a lock on the folder (another process waits, then reads the result); a folder
    that is truncated or does not match its metadata is rebuilt, with a message."""
    key = cache_key(encoder, spec, values, tokens=tokens, device=device)
    folder = Path(cache_dir) / "latents" / f"{encoder.info.modality}-{'tokens-' if tokens else ''}{key}"
    if (folder / "meta.json").exists():
        latents, problem = read_cache(folder, len(values), tokens)
        if problem is None:
            print(f"{label}: read {len(latents)} cached latents from {folder}")
            return latents
    with locked(folder, lambda: print(f"{label}: waiting for another process encoding into {folder}")):
        problem = None
        if (folder / "meta.json").exists():  # built by another process while we waited, or damaged
            latents, problem = read_cache(folder, len(values), tokens)
            if problem is None:
                print(f"{label}: read {len(latents)} cached latents from {folder}")
                return latents
            print(f"{label}: latent cache {folder} is damaged ({problem}); rebuilding it")
        sweep_stale(folder)  # what a killed builder left
        latents = encode_values(encoder, values, device, batch_size, num_workers, desc=f"encoding {label}",
                                tokens=tokens)
        write_cache(folder, latents, spec, tokens)
    print(f"{label}: cached {len(latents)} latents in {folder}")
    return latents
