"""Scenario cells: one scenario's deviation from a shared model, per coarse (user, item) group.

Where scenarios differ in how groups of users like groups of items, a small scenario has too
few events to learn its own embeddings, but enough for one number per pair of coarse groups.
The groups come from the shared model's entity rows (k-means: entities the shared model
treats alike), the numbers from a ridge-penalised logistic fit with the shared model's logit
as the offset, so a cell without evidence stays at zero deviation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def coarse_groups(rows: torch.Tensor, k: int, seed: int = 0, restarts: int = 4,
                  iters: int = 60) -> torch.Tensor:
    """Group index (0..k-1) of each row: Lloyd's k-means, the best of ``restarts`` seeded
    random starts by within-group sum of squares."""
    rows = rows.detach().float()
    k = max(1, min(k, len(rows)))
    gen = torch.Generator().manual_seed(seed)
    best, best_cost = torch.zeros(len(rows), dtype=torch.long), float("inf")
    for _ in range(restarts):
        centres = rows[torch.randperm(len(rows), generator=gen)[:k]].clone()
        for _ in range(iters):
            groups = torch.cdist(rows, centres).argmin(1)
            sums = torch.zeros_like(centres).index_add_(0, groups, rows)
            counts = torch.bincount(groups, minlength=k).unsqueeze(1)
            moved = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
            if torch.equal(moved, centres):
                break
            centres = moved
        groups = torch.cdist(rows, centres).argmin(1)
        cost = float((rows - centres[groups]).pow(2).sum())
        if cost < best_cost:
            best, best_cost = groups, cost
    return best


@dataclass
class CellDeviation:
    """Logit deviation ``weights[user group, item group]``."""

    user_group: torch.Tensor  # (num_users,) long
    item_group: torch.Tensor  # (num_items,) long
    weights: torch.Tensor  # (groups, groups)

    def __call__(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.weights[self.user_group[users], self.item_group[items]]

    def memory_bytes(self) -> int:
        """The cells and one group index per entity (a byte each up to 256 groups)."""
        return 4 * self.weights.numel() + len(self.user_group) + len(self.item_group)


def fit_cells(offset: torch.Tensor, users: torch.Tensor, items: torch.Tensor,
              labels: torch.Tensor, user_group: torch.Tensor, item_group: torch.Tensor,
              ridge: float, max_iter: int = 200) -> CellDeviation:
    """Cells minimising the mean log loss of ``offset + deviation`` plus ``ridge`` times the
    squared cells (L-BFGS). No separate intercept: the shared model already knows each
    scenario's base rate (its scenario field), and an unpenalised intercept beside
    penalised cells leaves a weak ridge badly conditioned."""
    groups_u, groups_i = int(user_group.max()) + 1, int(item_group.max()) + 1
    cell = user_group[users] * groups_i + item_group[items]
    offset, labels = offset.detach().float(), labels.float()
    weights = torch.zeros(groups_u * groups_i, requires_grad=True)
    opt = torch.optim.LBFGS([weights], max_iter=max_iter, tolerance_grad=1e-6,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = (F.binary_cross_entropy_with_logits(offset + weights[cell], labels)
                + ridge * weights.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return CellDeviation(user_group, item_group, weights.detach().reshape(groups_u, groups_i))
