"""Training batches: one endless stream per trained pair, a pure function of the step.

Micro-step k of a pair is batch ``k mod n`` of the permutation drawn for cycle ``k // n`` (n
batches per pass over the pair's training set), seeded by (seed, pair, cycle). A smaller set
therefore cycles with a fresh order while a larger one is still in its first pass, and a resumed
run draws exactly the batches an uninterrupted one would. With frozen, cached towers a batch is
a slice of pair indices on the training device (no Python per sample, so batches of 40k cost
nothing); a tower that runs online reads and preprocesses its raw inputs in DataLoader workers.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from . import distributed
from .inputs import read_value
from .manifest import PairedData


class _OnlinePairs(Dataset):
    """Raw inputs of the online modalities for each pair, preprocessed in the collate."""

    def __init__(self, data: PairedData, online: dict):
        self.data, self.online = data, online
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
        return idx, {m: enc.preprocess([raw[m] for _, raw in items]) for m, enc in self.online.items()}


class _IndexBatches:
    """The stream's index batches from micro-step ``start`` on, forever (a DataLoader batch_sampler)."""

    def __init__(self, stream: "PairStream", start: int):
        self.stream, self.start = stream, start

    def __iter__(self):
        k = self.start
        while True:
            yield self.stream.indices(k).tolist()
            k += 1


class PairStream:
    """Endless (pairs [B, 2] as rows of the split's value tables, online inputs) batches of one pair."""

    def __init__(self, data: PairedData, rows: torch.Tensor, batch_size: int, online: dict, device: torch.device,
                 seed: int, stream: int = 0, drop_last: bool = True, num_workers: int = 0):
        self.data, self.rows, self.online, self.device = data, rows, online, device
        self.seed, self.stream, self.drop_last, self.num_workers = seed, stream, drop_last, num_workers
        self.n_local = len(data) // distributed.world_size()
        self.batch_size = batch_size
        if self.n_local < batch_size and drop_last:
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

    def iterate(self, start: int = 0):
        """Batches from micro-step ``start`` on, endlessly."""
        if not self.online:
            k = start
            while True:
                yield self._rows_on_device[self.indices(k).to(self.device)], {}
                k += 1
        dataset = _OnlinePairs(self.data, self.online)
        loader = DataLoader(dataset, batch_sampler=_IndexBatches(self, start), num_workers=self.num_workers,
                            collate_fn=dataset.collate,
                            generator=torch.Generator().manual_seed(self.seed))  # worker seeds, not the global RNG
        for idx, inputs in loader:
            yield self._rows_on_device[idx.to(self.device)], inputs


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
