"""Preemption: SIGTERM (SLURM, Kubernetes) checkpoints the run at the next step and stops it cleanly.

A scheduler that preempts a job sends SIGTERM and, a grace period later, SIGKILL. The handler
only sets a flag; the loop reads it after each optimiser step, writes a mid-epoch checkpoint
(weights + state.pt, as ``train.checkpoint_every`` does) and raises ``Preempted``, so
``fuse train ... --resume`` continues with exactly the batches an uninterrupted run would draw.
Under torchrun every rank gets the signal, but not necessarily at the same step: the flag is
all-reduced every ``train.log_every`` steps (a host sync, so not every step), and all ranks
stop after the same one.
"""

from __future__ import annotations

import signal
import threading

import torch

from fuse.base import collectives

EXIT_CODE = 143  # 128 + SIGTERM: what a shell reports for a job SIGTERM ended; here it also means "checkpointed"


class Preempted(Exception):
    """The run stopped on SIGTERM after checkpointing step ``step`` (not an error: resume it)."""

    def __init__(self, step: int, run_dir):
        super().__init__(f"preempted: checkpointed step {step} in {run_dir}")
        self.step, self.run_dir, self.main = step, run_dir, collectives.is_main()


class Preemption:
    """Context manager: once ``arm``ed (when the training steps begin), SIGTERM sets a flag instead
    of ending the process; the previous handler is back when the block ends. Before that (data,
    latent cache), SIGTERM ends the process as it always did: there is no step to checkpoint yet."""

    def __init__(self):
        self.device, self.flag, self.previous, self.every = torch.device("cpu"), False, None, 1

    def _on_signal(self, signum, frame):
        self.flag = True

    def __enter__(self) -> "Preemption":
        return self

    def arm(self, device: torch.device, every: int = 1) -> None:
        """Catch SIGTERM from now on; ``device`` carries the flag's all-reduce under torchrun, every ``every`` steps."""
        self.device, self.every = device, every
        if threading.current_thread() is threading.main_thread():  # signal handlers live on the main thread only
            self.previous = signal.signal(signal.SIGTERM, self._on_signal)

    def __exit__(self, *exc) -> bool:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False

    def requested(self, step: int) -> bool:
        """Whether to stop after ``step``: this process was signalled (one process), or any rank was
        (torchrun: one small all-reduce on the steps that are multiples of ``every``)."""
        if not collectives.is_distributed():
            return self.flag
        if step % self.every:
            return False
        t = torch.tensor([float(self.flag)], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())
