"""A FIFO queue of past embeddings: negatives for contrastive distillation (as in MoCo).

Not an entry point: objectives that want a memory bank own one as a sub-module, so it moves
to the training device with them.
"""

from __future__ import annotations

import torch
from torch import nn

from fuse.distributed import gather_with_grad


class MemoryBank(nn.Module):
    """Fixed-size ring buffer of rows; ``valid()`` for the loss, ``items()`` oldest first.

    The queue is a non-persistent buffer: a 65,536 x 768 queue would bloat every epoch's
    weights file. It travels in the single `state.pt` instead (``resume_state``), so a resumed
    run continues with the negatives it had. Pointer and fill count are plain ints so that
    enqueueing never waits for the GPU.
    """

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"MemoryBank needs size >= 1 and dim >= 1, got size={size}, dim={dim}")
        self.size, self.dim = size, dim
        self.register_buffer("queue", torch.zeros(size, dim), persistent=False)
        self.ptr = 0     # next row to overwrite
        self.count = 0   # rows filled so far (<= size)

    def __len__(self) -> int:
        return self.count

    @torch.no_grad()
    def enqueue(self, x: torch.Tensor, gathered: bool = False) -> None:
        """Append rows, overwriting the oldest once full.

        Under torch.distributed every rank enqueues all ranks' rows (rank order), so the
        queues stay identical; pass ``gathered=True`` when ``x`` already holds them.
        """
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MemoryBank of dim {self.dim} got rows of shape {tuple(x.shape)}")
        x = x.detach()
        if not gathered:
            x = gather_with_grad(x)
        x = x[-self.size:].to(self.queue.dtype)  # more rows than the queue holds: keep the newest
        n, p = x.shape[0], self.ptr
        first = min(n, self.size - p)            # rows that fit before the end of the buffer
        self.queue[p:p + first] = x[:first]
        self.queue[:n - first] = x[first:]       # the rest wraps around to the start
        self.ptr = (p + n) % self.size
        self.count = min(self.count + n, self.size)

    def valid(self) -> torch.Tensor:
        """The filled rows in storage order (a view; the order is irrelevant to a softmax)."""
        return self.queue[:self.count]

    def items(self) -> torch.Tensor:
        """The filled rows, oldest first (a copy once the queue has wrapped)."""
        if self.count < self.size:
            return self.queue[:self.count]
        return torch.cat([self.queue[self.ptr:], self.queue[:self.ptr]])

    def resume_state(self) -> dict:
        """The filled rows (oldest first) for `fuse.resume`; the queue itself is not in weights files."""
        return {"rows": self.items().cpu().clone(), "size": self.size}

    def load_resume_state(self, state: dict) -> None:
        rows = state["rows"]
        if state["size"] != self.size or rows.shape[1:] != (self.dim,):
            raise ValueError(f"the state file's memory bank has {state['size']} rows of dim {tuple(rows.shape[1:])}, "
                             f"the recipe's {self.size} rows of dim {self.dim} (queue_size)")
        self.reset()
        if len(rows):
            self.enqueue(rows.to(self.queue.device), gathered=True)

    def reset(self) -> None:
        self.queue.zero_()
        self.ptr = self.count = 0

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
