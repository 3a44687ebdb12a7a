"""Training batches: one endless stream per trained pair, a pure function of the step.

Micro-step k of a pair is batch ``k mod n`` of the permutation drawn for cycle ``k // n`` (n
batches per pass over the pair's training set), seeded by (seed, pair, cycle). A smaller set
therefore cycles with a fresh order while a larger one is still in its first pass, and a resumed
run draws exactly the batches an uninterrupted one would. With frozen, cached towers a batch is
a slice of pair indices on the training device (no Python per sample, so batches of 40k cost
nothing); a tower that runs online reads and preprocesses its raw inputs in DataLoader workers.
Frozen tables too large for the device stay in the memory-mapped latent store: their rows are
gathered ahead of the step by a background thread (in the DataLoader's collate when a tower
runs online), pinned on CUDA, and arrive as the batch's third element.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from fuse.base.inputs import read_value
from fuse.data.manifest import PairedData
from fuse.training import distributed


class _OnlinePairs(Dataset):
    """Raw inputs of the online modalities for each pair, preprocessed in the collate."""

    def __init__(self, data: PairedData, online: dict, gather=None):
        self.data, self.online, self.gather = data, online, gather
        self.columns = {m: data.modalities.index(m) for m in online}

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        pair = self.data.pairs[i]
        return i, {m: read_value(enc.info.input, self.data.values[m][pair[self.columns[m]]])
                   for m, enc in self.online.items()}

    def collate(self, items):
        """Preprocess a list of raw items into the online towers' batches, with their indices."""
        idx = torch.tensor([i for i, _ in items])
        inputs = {m: enc.preprocess([raw[m] for _, raw in items]) for m, enc in self.online.items()}
        return idx, inputs, self.gather(idx) if self.gather else {}


class _IndexBatches:
    """The stream's index batches from micro-step ``start`` on, forever (a DataLoader batch_sampler)."""

    def __init__(self, stream: "PairStream", start: int):
        self.stream, self.start = stream, start

    def __iter__(self):
        k = self.start
        while True:
            yield self.stream.indices(k).tolist()
            k += 1


@dataclass(frozen=True)
class StreamOptions:
    """How a pair's batches are drawn: this rank's batch size, the run's seed and the stream's index
    among the trained pairs (together they seed each pass's order), whether a partial last batch is
    dropped, DataLoader workers for online towers, and how many batches of mapped rows are gathered ahead."""

    batch_size: int
    seed: int
    stream: int = 0
    drop_last: bool = True
    num_workers: int = 0
    prefetch: int = 4


class PairStream:
    """Endless (pairs [B, 2] as rows of the split's value tables, online inputs, gathered latents)
    batches of one pair. ``online`` holds the pair's towers that run in the step (their raw inputs
    are read and preprocessed); ``mapped`` names the tables that stay in the latent store:
    ``{("latents" | "extras", name): (LatentTable, column of the pair it is indexed by)}``."""

    def __init__(self, data: PairedData, rows: torch.Tensor, online: dict, device: torch.device,
                 options: StreamOptions, mapped: dict | None = None):
        self.data, self.rows, self.online, self.device = data, rows, online, device
        self.mapped, self.prefetch = mapped or {}, options.prefetch
        self.seed, self.stream, self.drop_last = options.seed, options.stream, options.drop_last
        self.num_workers = options.num_workers
        self.n_local = len(data) // distributed.world_size()
        self.batch_size = batch_size = options.batch_size
        if self.n_local < batch_size and self.drop_last:
            self.batch_size = max(2, self.n_local)  # a tiny dataset still trains, with one smaller batch per pass
        self._perm_cycle, self._perm = None, None
        self._rows_on_device = rows.to(device)

    def __len__(self) -> int:
        """Batches in one pass over this pair's training set (on this rank)."""
        n, b = self.n_local, self.batch_size
        return max(1, n // b if self.drop_last else -(-n // b))

    def _seed(self, cycle: int) -> int:
        # Stream 0 keeps the seeds single-pair runs always used (seed + epoch).
        return self.seed + cycle + 1 if self.stream == 0 else hash((self.seed, self.stream, cycle)) % 2**62

    def indices(self, k: int) -> torch.Tensor:
        """Indices into the pair's data for micro-step ``k``."""
        cycle, pos = divmod(k, len(self))
        if cycle != self._perm_cycle:
            gen = torch.Generator().manual_seed(self._seed(cycle))
            # Same permutation on every rank (same seed); each rank takes its own stride of it.
            self._perm = torch.randperm(len(self.data), generator=gen)[distributed.rank()::distributed.world_size()]
            self._perm_cycle = cycle
        return self._perm[pos * self.batch_size:(pos + 1) * self.batch_size]

    def gather(self, idx: torch.Tensor) -> dict:
        """The mapped tables' rows for pair indices ``idx`` (CPU; pinned when training on CUDA)."""
        out = {}
        for key, (table, col) in self.mapped.items():
            rows = table[self.rows[idx, col]]
            out[key] = rows.pin_memory() if self.device.type == "cuda" else rows
        return out

    def iterate(self, start: int = 0):
        """Batches from micro-step ``start`` on, endlessly."""
        if not self.online:
            if self.mapped:
                for idx, gathered in _ahead(self._gathered(start), self.prefetch):
                    yield self._rows_on_device[idx.to(self.device)], {}, gathered
            k = start
            while True:
                yield self._rows_on_device[self.indices(k).to(self.device)], {}, {}
                k += 1
        dataset = _OnlinePairs(self.data, self.online, self.gather if self.mapped else None)
        loader = DataLoader(dataset, batch_sampler=_IndexBatches(self, start), num_workers=self.num_workers,
                            collate_fn=dataset.collate, pin_memory=self.device.type == "cuda",
                            generator=torch.Generator().manual_seed(self.seed))  # worker seeds, not the global RNG
        for idx, inputs, gathered in loader:
            yield self._rows_on_device[idx.to(self.device)], inputs, gathered

    def _gathered(self, start: int):
        k = start
        while True:
            idx = self.indices(k)
            yield idx, self.gather(idx)
            k += 1


def _ahead(items, depth: int):
    """Run an endless generator ``depth`` items ahead in a daemon thread (the reads of mapped pages
    overlap the step); the thread stops when the consumer drops this generator."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            q.put((False, exc))

    thread = threading.Thread(target=produce, name="fuse-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            yield item
    finally:
        stop.set()


def first_micro_step(step: int, per_epoch: int, accum: int, pass_batches: int) -> int:
    """The micro-step at which optimiser step ``step`` begins: each epoch begins a fresh pass.

    An epoch is ``per_epoch`` steps of ``accum`` micro-batches over a pass of ``pass_batches``
    (the reference pair's batches). When ``accum`` does not divide the pass, its last
    ``pass_batches mod accum`` batches are left out, as drop_last leaves out a partial batch;
    continuing the stream instead would spill them into the next epoch and shift every later
    epoch off its pass (10 epochs of 3 x 3 micro-batches over 10 batches would see 9 passes).
    """
    epoch, within = divmod(step, per_epoch)
    return epoch * max(pass_batches, per_epoch * accum) + within * accum
