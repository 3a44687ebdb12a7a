"""Latent caching: a frozen encoder sees each input once, ever.

Latents of one modality's values are stored as safetensors shards in a folder keyed by a hash
of everything that changes them: the encoder's registered name and options, a fingerprint of
its weights, its preprocessing, and the values themselves (file size and mtime for files).
Later epochs and later runs read the folder; training on cached latents never runs encoders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset

from .inputs import input_kind, read_value
from .errors import ModelFileError
from .latents import Tokens

SHARD_ROWS = 65536


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
        "autocast": str(encode_autocast(device)),
        "values": values_fingerprint(encoder.info.input, values),
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


def cached_latents(encoder, spec: dict, values: list[str], cache_dir: Path, device: torch.device,
                   batch_size: int = 64, num_workers: int = 0, label: str = "", tokens: bool = False):
    """Latents for ``values`` (pooled, or Tokens), read from the cache or encoded once and written there."""
    key = cache_key(encoder, spec, values, tokens=tokens, device=device)
    folder = Path(cache_dir) / "latents" / f"{encoder.info.modality}-{'tokens-' if tokens else ''}{key}"
    meta_file = folder / "meta.json"
    if meta_file.exists():
        try:
            meta = json.loads(meta_file.read_text())
            shards = [load_file(str(folder / s)) for s in meta["shards"]]
            latents = (Tokens.cat([Tokens(s["latents"], s["mask"]) for s in shards]) if tokens
                       else torch.cat([s["latents"] for s in shards]))
        except Exception as exc:
            raise ModelFileError(f"Latent cache {folder} is corrupt ({exc}). Delete that folder and run again.") from None
        if len(latents) != len(values):
            raise ModelFileError(f"Latent cache {folder} has {len(latents)} rows for {len(values)} values. "
                                 "Delete that folder and run again.")
        print(f"{label}: read {len(latents)} cached latents from {folder}")
        return latents
    latents = encode_values(encoder, values, device, batch_size, num_workers, desc=f"encoding {label}", tokens=tokens)
    rows = len(latents)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards = []
    for i in range(0, max(rows, 1), SHARD_ROWS):
        name = f"shard-{i // SHARD_ROWS:05d}.safetensors"
        part = latents[i:i + SHARD_ROWS]
        tensors = {"latents": part.values, "mask": part.mask} if tokens else {"latents": part}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / name))
        shards.append(name)
    (tmp / "meta.json").write_text(json.dumps({"rows": rows, "tokens": tokens,
                                               "encoder": spec, "shards": shards}, indent=2, default=str))
    if folder.exists():  # another process finished first: keep theirs
        shutil.rmtree(tmp)
    else:
        tmp.rename(folder)
    print(f"{label}: cached {rows} latents in {folder}")
    return latents
