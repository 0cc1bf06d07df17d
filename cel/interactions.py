"""A set of interactions as tensors of dense ids (no I/O: loaders live in cli.evaluation)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Interactions:
    users: torch.Tensor  # (n,) long, dense ids
    items: torch.Tensor  # (n,) long, dense ids
    labels: torch.Tensor  # (n,) float: ratings, or 0/1 for binary events
    context: torch.Tensor | None = None  # (n, fields) long, optional categorical context

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def subset(self, index: torch.Tensor | slice) -> Interactions:
        ctx = None if self.context is None else self.context[index]
        return Interactions(self.users[index], self.items[index], self.labels[index], ctx)

    def to(self, device: torch.device | str) -> Interactions:
        ctx = None if self.context is None else self.context.to(device)
        return Interactions(self.users.to(device), self.items.to(device),
                            self.labels.to(device), ctx)

    def ids(self, side: str) -> torch.Tensor:
        return self.users if side == "user" else self.items
