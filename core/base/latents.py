"""Token-level latents: what an encoder gives a fusion module instead of one pooled vector."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Tokens:
    """values [N, T, D] and a bool mask [N, T] (True = a real token, False = padding).

    Indexing selects rows, like a tensor, so training code indexes pooled and token latents
    the same way.
    """

    values: torch.Tensor
    mask: torch.Tensor

    def __getitem__(self, idx) -> "Tokens":
        return Tokens(self.values[idx], self.mask[idx])

    def __len__(self) -> int:
        return self.values.shape[0]

    def to(self, device=None, dtype=None) -> "Tokens":
        """Move values (and optionally cast them) and the mask to a device."""
        return Tokens(self.values.to(device=device, dtype=dtype), self.mask.to(device))

    @staticmethod
    def cat(parts: list["Tokens"]) -> "Tokens":
        """Concatenate batches, padding every batch to the longest sequence."""
        length = max(p.values.shape[1] for p in parts)
        values = [F.pad(p.values, (0, 0, 0, length - p.values.shape[1])) for p in parts]
        masks = [F.pad(p.mask, (0, length - p.mask.shape[1])) for p in parts]
        return Tokens(torch.cat(values), torch.cat(masks))


def length_mask(lengths: torch.Tensor, size: int) -> torch.Tensor:
    """Bool [B, size]: True for the first ``lengths[i]`` positions of row i (valid frames)."""
    return torch.arange(size, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid tokens only [B, T, D] -> [B, D]; padding never dilutes the latent."""
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
