"""Loss-based reassignment of a window's entities among a few candidate clusters.

Like ``cel.grad_split.reassign_by_loss`` (every entity tried in a cluster at once, damped
moves, no cluster left empty), but bounded for streaming: besides each entity's current
cluster only ``candidates`` clusters are tried (random live ones plus any given, e.g. the
newest split child), and the never-empty rule works on the cluster counts, so the cost is
O((candidates + 1) x window forward passes + clusters), whatever the number of entities.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cel.tables import ClusteredEmbedding


@torch.no_grad()
def reassign_among(table: ClusteredEmbedding, ids: torch.Tensor,
                   sample_losses: Callable[[], torch.Tensor], candidates: int,
                   generator: torch.Generator, extra: list[int] | None = None,
                   keep_prob: float = 0.31) -> torch.Tensor:
    """Move entities of ``ids`` (the window's, one per sample) to a lower-loss cluster;
    returns the ids that moved."""
    m = table.num_active
    device = ids.device
    if m < 2 or len(ids) == 0:
        return ids[:0]
    entities, inverse = torch.unique(ids, return_inverse=True)
    current = table.assignment[entities].long()

    def per_entity() -> torch.Tensor:
        out = torch.zeros(len(entities), device=device)
        return out.index_add_(0, inverse, sample_losses().float())

    base = per_entity()
    pool = torch.randint(0, m, (candidates,), generator=generator).tolist() + (extra or [])
    pool = sorted({c for c in pool if 0 <= c < m})
    saved = table.assignment[entities].clone()
    losses = torch.empty(len(entities), len(pool), device=device)
    try:
        for j, c in enumerate(pool):
            table.assignment[entities] = c
            losses[:, j] = per_entity()
    finally:
        table.assignment[entities] = saved
    best_loss, best_j = losses.min(dim=1)
    best = torch.tensor(pool, device=device)[best_j]
    coins = torch.rand(len(entities), generator=generator).to(device)
    move = (best_loss < base - 1e-9 * base.abs()) & (coins >= keep_prob) & (best != current)
    # never leave a live cluster empty: its leaver that gains least stays
    counts = table.counts[:m]
    leaving = torch.bincount(current[move], minlength=m)
    arriving = torch.bincount(best[move], minlength=m)
    gain = base - best_loss
    for c in ((counts - leaving + arriving == 0) & (leaving > 0)).nonzero().flatten().tolist():
        leavers = move & (current == c)
        move[torch.where(leavers, gain, torch.inf).argmin()] = False
    moved, src, dst = entities[move], current[move], best[move]
    table.assignment[moved] = dst.to(table.assignment.dtype)
    table.counts.index_add_(0, src, -torch.ones_like(src))
    table.counts.index_add_(0, dst, torch.ones_like(dst))
    return moved
