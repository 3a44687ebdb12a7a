"""Training batches over the pairs of a manifest.

When both towers are frozen and cached, a batch is just a slice of a random permutation of
pair indices, drawn on the training device: no Python per sample, so batches of 40k cost
nothing. When a tower runs online (unfrozen encoder), a DataLoader reads and preprocesses its
raw inputs in worker processes.
"""

from __future__ import annotations

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler
from torch.utils.data.distributed import DistributedSampler

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
        idx = torch.tensor([i for i, _ in items])
        return self.data.pairs[idx], {m: enc.preprocess([raw[m] for _, raw in items])
                                      for m, enc in self.online.items()}


class PairBatches:
    """Iterable of (pairs [B, 2], online inputs {modality: preprocessed batch}) for one epoch."""

    def __init__(self, data: PairedData, batch_size: int, online: dict, device: torch.device,
                 seed: int, drop_last: bool = True, num_workers: int = 0):
        self.data, self.batch_size, self.online, self.device = data, batch_size, online, device
        self.seed, self.drop_last, self.num_workers, self.epoch = seed, drop_last, num_workers, 0
        n_global = len(data) // distributed.world_size()
        if n_global < batch_size and drop_last:
            batch_size = max(2, n_global)  # a tiny dataset still trains, with one smaller batch per epoch
            self.batch_size = batch_size
        if online:
            self.dataset = _OnlinePairs(data, online)
            sampler = (DistributedSampler(self.dataset, seed=seed) if distributed.is_distributed()
                       else RandomSampler(self.dataset, generator=torch.Generator().manual_seed(seed)))
            self.sampler = sampler
            self.loader = DataLoader(self.dataset, batch_sampler=BatchSampler(sampler, batch_size, drop_last),
                                     num_workers=num_workers, collate_fn=self.dataset.collate,
                                     persistent_workers=num_workers > 0,
                                     generator=torch.Generator().manual_seed(seed))  # worker seeds, not the global RNG

    def __len__(self) -> int:
        n = len(self.data) // distributed.world_size()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.online and isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        if self.online:
            for pairs, inputs in self.loader:
                yield pairs.to(self.device), inputs
            return
        # Same permutation on every rank (same seed), each rank takes its own stride of it.
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(len(self.data), generator=gen)[distributed.rank()::distributed.world_size()]
        pairs = self.data.pairs.to(self.device)
        perm = perm.to(self.device)
        for i in range(len(self)):
            yield pairs[perm[i * self.batch_size:(i + 1) * self.batch_size]], {}
