"""Latent caching: a frozen encoder sees each input once, ever, whatever value list asks for it.

Latents live in a latent store (``fuse.data.store``): one folder per *encoder identity*, the hash of
what determines its latents (``latent_identity``: registered name, weights fingerprint,
preprocessing signature, token or pooled output, encoding autocast dtype, storage dtype), never
option strings (an export's ``./`` paths name the same weights as training's absolute ones).
Rows are addressed per value by ``InputKind.identity`` (path, size and mtime for files), so a new
value list encodes only the values the store lacks.

Under torchrun every rank encodes its own slice of the values (contiguous, so the slices do not
depend on what the store already holds) into its own shards, then polls the folder until every
slice is there: no rank waits in a collective (NCCL's 10-minute default timeout) while another
encodes. Shards are published as they fill (``shard_rows``), so host memory stays bounded and a
process killed at any point resumes with only the missing shards, batched exactly as before.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from fuse.base import collectives
from fuse.base.atomic import held, locked
from fuse.base.collectives import any_sharded
from fuse.base.errors import DataError
from fuse.base.inputs import input_kind, read_value
from fuse.base.latents import Tokens
from fuse.data.store import STORE_FORMAT, LatentStore, value_key

SHARD_ROWS = 65536
DTYPES = {"float32": torch.float32, "float16": torch.float16}


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


def latent_identity(encoder, name: str, tokens: bool = False, device: torch.device | str = "cpu",
                    dtype: str = "float32") -> dict:
    """What determines a frozen encoder's latents, and nothing else: its registered ``name``, a
    fingerprint of its weights, its ``preprocessing_signature()`` (which must name every option
    that changes latents other than through the weights: pooling, max_length, architecture...),
    pooled or token output, the autocast dtype encoding uses on ``device`` and the storage dtype.
    Options that only locate files (a model path) are deliberately absent."""
    return {"format": STORE_FORMAT, "encoder": name, "weights": weights_fingerprint(encoder),
            "preprocessing": encoder.preprocessing_signature(), "tokens": tokens,
            "autocast": str(encode_autocast(device)), "dtype": "float16" if tokens else dtype}


def store_folder(cache_dir: Path, identity: dict) -> Path:
    """``<cache_dir>/latent-store/<encoder>-[tokens-]<hash of the identity>``."""
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return Path(cache_dir) / "latent-store" / f"{identity['encoder']}-{'tokens-' if identity['tokens'] else ''}{key}"


class ValuesDataset(Dataset):
    """Manifest values of one modality, read as raw inputs (PIL images, text, AudioClip)."""

    def __init__(self, kind: str, values: list):
        self.kind, self.values = kind, values

    def __len__(self):
        return len(self.values)

    def __getitem__(self, i):
        return read_value(self.kind, self.values[i])


def shard_batches(n: int, batch_size: int, shard_rows: int) -> list[list[int]]:
    """Index batches over ``n`` values that restart at every shard boundary, so a shard's rows are
    batched the same whether it is encoded in a full pass or alone after a resume."""
    return [list(range(b, min(b + batch_size, s + shard_rows, n)))
            for s in range(0, n, shard_rows) for b in range(s, min(s + shard_rows, n), batch_size)]


def encode_batches(encoder, values: list, device: torch.device, batches: list[list[int]], num_workers: int = 0,
                   desc: str | None = None, tokens: bool = False):
    """Yield the encoder's output for each index batch: float32 [B, D] on the CPU, or fp16 Tokens.

    Encoding runs under ``torch.inference_mode`` (no autograd bookkeeping at all; ``no_grad`` for an
    FSDP-sharded encoder), with pinned
    host batches and bf16 autocast on CUDA (see ``encode_autocast``; part of the identity)."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    # Its own generator: iterating a DataLoader draws a seed, and drawing it from the global RNG
    # would make training depend on whether the latents came from the cache or were encoded.
    loader = DataLoader(ValuesDataset(encoder.info.input, values), batch_sampler=batches, num_workers=num_workers,
                        collate_fn=encoder.preprocess, generator=torch.Generator(),
                        pin_memory=device.type == "cuda")
    dtype = encode_autocast(device)
    # An FSDP-sharded encoder (train.fsdp, validated during training) reuses its all-gather buffers:
    # made inside inference_mode they could not be written by a training step again.
    no_grad = torch.no_grad if any_sharded(encoder) else torch.inference_mode
    was_training = encoder.training
    encoder.eval()
    try:
        for batch in tqdm(loader, desc=desc, disable=desc is None, unit="batch"):
            with no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                if tokens:
                    values_, mask = encoder.forward_tokens(batch)
                    out = Tokens(values_.half().cpu(), mask.cpu())
                else:
                    out = encoder(batch).float().cpu()
            # Cloned outside inference mode: an ordinary tensor training may index.
            yield Tokens(out.values.clone(), out.mask.clone()) if tokens else out.clone()
    finally:
        encoder.train(was_training)


def encode_values(encoder, values: list, device: torch.device, batch_size: int = 64, num_workers: int = 0,
                  desc: str | None = None, tokens: bool = False):
    """Run a (frozen) encoder over values: float32 latents [N, D] on the CPU, or (tokens=True)
    fp16 Tokens [N, T, D] for fusion modules."""
    out = list(encode_batches(encoder, values, device, shard_batches(len(values), batch_size, max(len(values), 1)),
                              num_workers, desc, tokens))
    if tokens:
        return Tokens.cat(out)
    return torch.cat(out) if out else torch.empty(0, encoder.info.dim)


@dataclass(frozen=True)
class EncodeOptions:
    """How ``cached_latents`` encodes and returns latents (the defaults are the latent store's).

    ``batch_size``/``num_workers``: the encoding DataLoader. ``label``: names the values in messages.
    ``tokens``: token sequences (Tokens) for fusion modules instead of pooled latents. ``dtype``:
    how pooled latents are stored (float32 or float16; part of the store's identity). ``shard_rows``:
    rows per published shard. ``mapped``: return a memory-mapped LatentTable instead of a tensor.
    ``poll_s``/``report_s``: how often a rank waiting for other ranks' slices looks, and says whose
    are missing. ``verbose``: print progress and cache messages.
    """

    batch_size: int = 64
    num_workers: int = 0
    label: str = ""
    tokens: bool = False
    dtype: str = "float32"
    shard_rows: int = SHARD_ROWS
    mapped: bool = False
    poll_s: float = 1.0
    verbose: bool = True
    report_s: float = 300.0


def _encode_into(store: LatentStore, prefix: str, encoder, values: list, keys: list[str], device,
                 options: EncodeOptions) -> None:
    """Encode ``values`` (whose keys are ``keys``) and publish a shard every ``options.shard_rows`` rows."""
    parts, start, shard_rows = [], 0, options.shard_rows
    desc = f"encoding {options.label}" if options.verbose else None
    for out in encode_batches(encoder, values, device, shard_batches(len(values), options.batch_size, shard_rows),
                              options.num_workers, desc, options.tokens):
        parts.append(out)
        if sum(len(p) for p in parts) == min(shard_rows, len(values) - start):
            if options.tokens:
                t = Tokens.cat(parts)
                tensors = {"latents": t.values, "mask": t.mask}
            else:
                tensors = {"latents": torch.cat(parts).to(DTYPES[options.dtype])}
            n = len(tensors["latents"])
            store.write_shard(prefix, keys[start:start + n], tensors)
            parts, start = [], start + n


def rank_slice(keys: list[str], rank: int, world: int) -> list[str]:
    """The contiguous share of ``keys`` that ``rank`` of ``world`` encodes."""
    return keys[rank * len(keys) // world:(rank + 1) * len(keys) // world]


def waiting_for(folder: Path, unique: list[str], missing: list[str], world: int) -> str:
    """Which ranks' slices are still missing and whether each is encoding now (holds its writer lock):
    under torchrun a dead rank stops the job, but other launchers may leave the rest waiting."""
    gone = set(missing)
    parts = []
    for r in range(world):
        todo = sum(k in gone for k in rank_slice(unique, r, world))
        if todo:
            busy = held(folder / f"writer-r{r}of{world}")
            parts.append(f"rank {r}: {todo} latents, {'encoding' if busy else 'NOT encoding'}")
    idle = [p for p in parts if p.endswith("NOT encoding")]
    advice = (" A rank that is not encoding may have died: if so, stop the run and start it again "
              "(finished shards are kept)." if idle else "")
    return f"still waiting for {'; '.join(parts)}.{advice}"


def cached_latents(encoder, spec: dict, values: list[str], cache_dir: Path, device: torch.device,
                   options: EncodeOptions = EncodeOptions()):
    """Latents for ``values`` (pooled, or Tokens) from the latent store; only the values it lacks are
    encoded (by this rank: its slice of them) and published there.

    Returns an in-memory tensor (``options.dtype``), or with ``options.mapped`` a ``LatentTable`` that
    gathers rows from the memory-mapped shards; ``options.verbose=False`` prints nothing. Shards that
    are truncated or do not match their record are dropped and re-encoded, with a message; a shard of
    NaN/Inf latents raises DataError. A rank whose slice is done polls the folder (every ``poll_s``)
    until the other ranks' slices are there, saying every ``report_s`` whose slices are missing."""
    o = options
    label, tokens, dtype = o.label, o.tokens, o.dtype
    if dtype not in DTYPES:
        raise DataError(f"latent dtype '{dtype}' is not one of {', '.join(DTYPES)} (data.latent_dtype)")
    if not values:
        return encode_values(encoder, [], device, o.batch_size, tokens=tokens)
    say = print if o.verbose else (lambda *a: None)
    identity = latent_identity(encoder, spec["name"], tokens, device, dtype)
    folder = store_folder(cache_dir, identity)
    kind = input_kind(encoder.info.input)
    keys = [value_key(kind.identity(v)) for v in values]
    first = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    unique = list(first)
    rank, world = collectives.rank(), collectives.world_size()
    store = LatentStore(folder, identity)
    store.refresh()
    encoded = 0
    for attempt in range(3):
        # Every rank takes a contiguous slice of the unique values; after damage, whoever found it
        # re-encodes everything missing (the slice's owner may have moved on).
        mine = rank_slice(unique, rank, world) if attempt == 0 else unique
        if store.missing(mine):
            prefix = f"r{rank}of{world}"
            with locked(folder / f"writer-{prefix}",
                        lambda: say(f"{label}: waiting for another process encoding into {folder}")):
                store.sweep(prefix)  # what a killed writer left
                store.refresh()      # what another process published while we waited
                todo = store.missing(mine)
                if todo:
                    _encode_into(store, prefix, encoder, [values[first[k]] for k in todo], todo, device, o)
                    encoded += len(todo)
        waiting = store.missing(unique)
        if waiting:
            say(f"{label}: waiting for other ranks' {len(waiting)} latents in {folder}")
        last_report = time.monotonic()
        while waiting:
            time.sleep(o.poll_s)
            store.refresh()
            waiting = store.missing(waiting)
            if waiting and time.monotonic() - last_report >= o.report_s:  # a peer that died outside torchrun
                say(f"{label}: {waiting_for(folder, unique, waiting, world)}")
                last_report = time.monotonic()
        table, problems = store.table(keys, tokens)
        if table is not None:
            break
        say(f"{label}: latent store {folder} is damaged ({'; '.join(problems)}); re-encoding those rows")
    else:
        raise DataError(f"Latent store {folder} stayed damaged after re-encoding it twice ({'; '.join(problems)}); "
                        "check the disk, or delete the folder.")
    if encoded:
        say(f"{label}: cached {encoded} new latents in {folder} ({len(unique) - encoded} were there)")
    else:
        say(f"{label}: read {len(values)} cached latents from {folder}")
    return table if o.mapped else table.materialize()

