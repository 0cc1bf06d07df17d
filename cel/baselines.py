"""Compression baselines at a given memory budget: modulo hashing and double hashing.

Both map dense entity ids to rows with no stored state, so their memory is the table alone.
"""

from __future__ import annotations

import torch
from torch import nn

# Universal hashing ((a·x + b) mod p) mod rows; multipliers near p so that x·a wraps mod p
# even for small ids (small multipliers make the two hashes differ by a constant).
_PRIME = 2_147_483_647
_MULTIPLIERS = (1_500_450_271, 1_234_567_891)
_OFFSETS = (12_345, 67_891)


class HashEmbedding(nn.Module):
    """``rows`` shared rows, entity ``e`` uses row ``e mod rows`` (the hashing trick)."""

    def __init__(self, num_entities: int, dim: int, rows: int, init_std: float = 0.1,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.num_entities, self.dim, self.rows = num_entities, dim, max(1, rows)
        self.weight = nn.Parameter(torch.randn(self.rows, dim, device=device) * init_std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids % self.rows]

    def memory_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()


class DoubleHashEmbedding(nn.Module):
    """Sum of two rows chosen by two independent hashes (Zhang et al., double hashing).

    Two entities collide on both rows only rarely, so at the same memory it separates entities
    far better than one modulo hash.
    """

    def __init__(self, num_entities: int, dim: int, rows: int, init_std: float = 0.1,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.num_entities, self.dim = num_entities, dim
        self.half = max(1, rows // 2)
        self.weight = nn.Parameter(
            torch.randn(2, self.half, dim, device=device) * init_std / 2**0.5)

    def _hash(self, ids: torch.Tensor, k: int) -> torch.Tensor:
        return ((ids * _MULTIPLIERS[k] + _OFFSETS[k]) % _PRIME) % self.half

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[0][self._hash(ids, 0)] + self.weight[1][self._hash(ids, 1)]

    def memory_bytes(self) -> int:
        return self.weight.numel() * self.weight.element_size()


def rows_for_budget(budget_bytes: int, dim: int, bytes_per_float: int = 4) -> int:
    """How many ``dim``-wide float rows fit in ``budget_bytes`` (at least one)."""
    return max(1, budget_bytes // (dim * bytes_per_float))
