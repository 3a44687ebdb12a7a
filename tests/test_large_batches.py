"""Large-batch options besides GradCache: grad_accum epochs, gradient checkpointing, world-size errors."""

from __future__ import annotations

import pytest
import torch

from fuse.batches import PairStream, first_micro_step
from fuse.errors import RecipeError


@pytest.mark.parametrize("accum", [1, 3, 4])
def test_grad_accum_epochs_are_passes(accum):
    """10 batches per pass: every epoch of accumulated steps draws each sample at most once, from its own pass."""
    stream = PairStream(range(40), torch.zeros(40, 2, dtype=torch.long), 4, {}, torch.device("cpu"), seed=0)
    n = len(stream)
    per_epoch = n // accum
    for epoch in range(4):
        first = first_micro_step(epoch * per_epoch, per_epoch, accum, n)
        ks = [first_micro_step(epoch * per_epoch + s, per_epoch, accum, n) + j
              for s in range(per_epoch) for j in range(accum)]
        assert ks == list(range(first, first + per_epoch * accum))  # consecutive within the epoch
        samples = torch.cat([stream.indices(k) for k in ks])
        assert len(set(samples.tolist())) == len(samples) == per_epoch * accum * 4
        assert {k // n for k in ks} == {epoch}  # the epoch's own pass, never the previous one's tail


def test_world_size_must_divide_the_batch(monkeypatch):
    from fuse import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    assert distributed.local_batch_size(12, "train.batch_size") == 4
    with pytest.raises(RecipeError, match=r"train.batch_size: batch size 10 is not divisible by the world size 3.*"
                                          r"e.g. 9 or 12"):
        distributed.local_batch_size(10, "train.batch_size")
