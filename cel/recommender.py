"""A recommender: a user table, an item table and an interaction model on top."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cel.interactions import Interactions
from cel.models import InteractionModel
from cel.tables import ClusteredEmbedding

TASKS = ("rating", "binary")


class Recommender(nn.Module):
    """``score`` gives the raw output (rating or logit); ``predict`` the served value.

    ``task="rating"`` uses squared loss, ``"binary"`` log loss on the logit.
    """

    def __init__(self, user_table: nn.Module, item_table: nn.Module,
                 model: InteractionModel, task: str = "rating") -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        self.user_table, self.item_table, self.model, self.task = (
            user_table, item_table, model, task)

    def table(self, side: str) -> ClusteredEmbedding:
        table = self.user_table if side == "user" else self.item_table
        if not isinstance(table, ClusteredEmbedding):
            raise TypeError(f"the {side} side is not clustered")
        return table

    def clustered_sides(self) -> list[str]:
        return [side for side, t in (("user", self.user_table), ("item", self.item_table))
                if isinstance(t, ClusteredEmbedding)]

    def score(self, data: Interactions, user_emb: torch.Tensor | None = None,
              item_emb: torch.Tensor | None = None) -> torch.Tensor:
        u = self.user_table(data.users) if user_emb is None else user_emb
        i = self.item_table(data.items) if item_emb is None else item_emb
        return self.model(u, i, data.context)

    def forward(self, data: Interactions) -> torch.Tensor:
        return self.score(data)

    @torch.no_grad()
    def predict(self, data: Interactions, chunk: int = 65_536) -> torch.Tensor:
        out = torch.cat([self.score(data.subset(slice(s, s + chunk)))
                         for s in range(0, max(len(data), 1), chunk)])
        return torch.sigmoid(out) if self.task == "binary" else out

    def loss(self, score: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-example data loss (no reduction)."""
        if self.task == "binary":
            return F.binary_cross_entropy_with_logits(score, labels, reduction="none")
        return (score - labels).pow(2)

    def memory_bytes(self) -> int:
        return int(self.user_table.memory_bytes() + self.item_table.memory_bytes())
