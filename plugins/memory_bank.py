"""A FIFO queue of past embeddings: negatives for contrastive distillation (as in MoCo)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from fuse import distributed


class MemoryBank(nn.Module):
    """Fixed-size ring buffer; `items()` returns the valid entries, oldest first.

    Buffers are not persistent: a 65,536 x 768 queue would bloat every checkpoint, and a
    fresh queue refills within a few hundred steps.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.size = size
        self.register_buffer("queue", torch.zeros(size, dim), persistent=False)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("count", torch.zeros((), dtype=torch.long), persistent=False)

    @torch.no_grad()
    def enqueue(self, x: torch.Tensor) -> None:
        """Append rows (all ranks' rows under torch.distributed), overwriting the oldest."""
        x = x.detach().to(self.queue.dtype)
        if distributed.is_distributed():
            parts = [torch.empty_like(x) for _ in range(distributed.world_size())]
            dist.all_gather(parts, x.contiguous())
            x = torch.cat(parts)
        x = x[-self.size:]
        n, p = x.shape[0], int(self.ptr)
        first = min(n, self.size - p)
        self.queue[p:p + first] = x[:first]
        self.queue[:n - first] = x[first:]
        self.ptr.fill_((p + n) % self.size)
        self.count.fill_(min(int(self.count) + n, self.size))

    def items(self) -> torch.Tensor:
        """Valid entries, oldest first."""
        c, p = int(self.count), int(self.ptr)
        if c < self.size:
            return self.queue[:c]
        return torch.cat([self.queue[p:], self.queue[:p]])
