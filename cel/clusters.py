"""CEL's cluster operations, written once: split a cluster, choose moves, move entities.

Every CEL learner goes through these: offline CEL (``cel.offline``/``cel.cluster_ops``), the
online learner (``cel.online``), the deep trainers and the evaluations of SAML and DUPN
(``cel.grad_split``). They differ only in how they measure an entity's loss or gradient,
which each passes in. A clustered side is anything with ``ClusterTable``'s fields.

- ``split_cluster``: GPCA split of one cluster; the child row starts as a copy of the parent.
- ``loss_moves`` / ``vote_moves``: where entities want to go (lowest loss; densest votes).
- ``move``: moves entities, never emptying a live cluster, counts kept exact.
- ``reassign_by_trial``: the loss rule for any model, trying clusters by re-running it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

import torch

from cel.gpca import gpca_split

# Damping of every reassignment (the reference code's): the chance that an entity which
# could move keeps its cluster this time, so a whole group never jumps at once.
KEEP_PROB = 0.31


class ClusterTable(Protocol):
    """One clustered side: rows shared by clusters, a cluster per entity, member counts.

    ``assignment`` may hold -1 for an entity not placed yet (the online learner)."""

    weight: torch.Tensor  # (max_clusters, d): rows in use are the first num_active
    assignment: torch.Tensor  # (entities,)
    counts: torch.Tensor  # (max_clusters,) int64 members per cluster
    num_active: int
    max_clusters: int


@dataclass(frozen=True)
class Split:
    """A split that happened: ``moved`` (entity ids) went from ``parent`` to ``child``."""

    parent: int
    child: int
    moved: torch.Tensor


def optimizer_rows(optimizer: torch.optim.Optimizer | None, weight: torch.Tensor
                   ) -> list[torch.Tensor]:
    """The optimiser's per-row state of ``weight`` (e.g. Adam's moments), which a split
    child inherits from its parent."""
    if optimizer is None:
        return []
    return [value for value in optimizer.state.get(weight, {}).values()
            if torch.is_tensor(value) and value.shape == weight.shape]


@torch.no_grad()
def split_cluster(table: ClusterTable, parent: int, members: torch.Tensor,
                  gradients: torch.Tensor, row_state: Iterable[torch.Tensor] = (),
                  min_members: int = 2) -> Split | None:
    """GPCA split of ``parent``: of its ``members`` (distinct ids), those whose loss
    ``gradients`` (one row each) project negatively on the first principal component move to
    a new row copied from the parent, with every per-row tensor in ``row_state``. Members
    that have left ``parent`` since their gradients were taken are left out. None when the
    budget is spent, fewer than ``min_members`` remain or their gradients agree."""
    if table.num_active >= table.max_clusters:
        return None
    still = table.assignment[members].long() == parent
    members, gradients = members[still], gradients[still]
    if members.numel() < min_members:
        return None
    moving = gpca_split(gradients)
    if not bool(moving.any()):
        return None
    child, moved = table.num_active, members[moving]
    table.weight[child] = table.weight[parent]
    for state in row_state:
        state[child] = state[parent]
    table.assignment[moved] = child
    table.counts[child] = moved.numel()
    table.counts[parent] -= moved.numel()
    table.num_active += 1
    return Split(parent, child, moved)


def loss_moves(losses: torch.Tensor, candidates: torch.Tensor, current: torch.Tensor,
               current_loss: torch.Tensor, free: torch.Tensor,
               needed: torch.Tensor | float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Each entity's destination by loss: its lowest-loss candidate when that lowers its loss
    by more than ``needed`` and the entity is ``free`` (damping), else ``current``.

    ``losses`` (E, C): the entity's summed loss in each candidate; ``candidates``: the
    cluster ids, (C,) shared or (E, C). Returns ``(targets, gain)``, gain = loss saved."""
    best_loss, best_j = losses.min(dim=1)
    if candidates.dim() == 1:
        best = candidates[best_j]
    else:
        best = candidates.gather(1, best_j.unsqueeze(1)).squeeze(1)
    needed = needed + 1e-9 * current_loss.abs()  # ties and rounding never move anyone
    move = free & (best != current) & (best_loss < current_loss - needed)
    return torch.where(move, best, current), current_loss - best_loss


def vote_moves(votes: torch.Tensor, counts: torch.Tensor, current: torch.Tensor,
               ratio: float) -> torch.Tensor:
    """Each entity's destination by votes (-1: stay): ``votes`` (E, live clusters) counts
    the entity's same-side neighbours per cluster; per member, the densest cluster wins when
    it beats the entity's own by ``ratio``."""
    density = votes / counts[: votes.shape[1]].clamp(min=1).to(votes.dtype)
    best_v, best = density.max(dim=1)
    own = density.gather(1, current.unsqueeze(1)).squeeze(1)
    return torch.where((best != current) & (best_v > own * ratio), best, -1)


@torch.no_grad()
def move(table: ClusterTable, ids: torch.Tensor, targets: torch.Tensor,
         regret: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the distinct entities ``ids`` to ``targets`` and keep the counts exact.

    A live cluster is never emptied: when all its members would leave, the leaver with the
    smallest ``regret`` (loss saved by moving; default: the last listed) stays. O(moves).
    Returns ``(moved ids, their new clusters)``."""
    old = table.assignment[ids].long()
    go = (targets != old) & (targets >= 0) & (old >= 0)
    ids, old, targets = ids[go], old[go], targets[go]
    if regret is not None:  # most regret first, so the least stays behind
        order = torch.argsort(regret[go], descending=True, stable=True)
        ids, old, targets = ids[order], old[order], targets[order]
    order = torch.argsort(old, stable=True)
    ids, old, targets = ids[order], old[order], targets[order]
    _, sizes = torch.unique_consecutive(old, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(sizes, 0) - sizes, sizes)
    rank = torch.arange(old.numel(), device=old.device) - starts
    allowed = rank < table.counts[old] - 1
    ids, old, targets = ids[allowed], old[allowed], targets[allowed]
    table.assignment[ids] = targets.to(table.assignment.dtype)
    ones = torch.ones_like(old)
    table.counts.index_add_(0, old, -ones)
    table.counts.index_add_(0, targets, ones)
    return ids, targets


@torch.no_grad()
def reassign_by_trial(table: ClusterTable, ids: torch.Tensor,
                      sample_losses: Callable[[], torch.Tensor],
                      generator: torch.Generator | None = None, keep_prob: float = KEEP_PROB,
                      candidates: int | None = None, extra: Iterable[int] = ()
                      ) -> torch.Tensor:
    """The loss rule for any model: move each entity of ``ids`` (one per sample of a window)
    to the cluster where the window's loss of its samples is lowest.

    ``sample_losses()`` returns the per-sample loss under the table's current assignment;
    each cluster is tried for every entity at once (exact while a sample's loss depends on
    one entity of this table). ``candidates``: try only that many random live clusters plus
    ``extra`` (bounded, for streams); None: all live clusters. An entity keeps its cluster
    with probability ``keep_prob``. Returns the ids that moved."""
    m = table.num_active
    if m < 2 or len(ids) == 0:
        return ids[:0]
    entities, inverse = torch.unique(ids, return_inverse=True)
    device = ids.device

    def per_entity() -> torch.Tensor:
        out = torch.zeros(len(entities), device=device)
        return out.index_add_(0, inverse, sample_losses().float())

    if candidates is None:
        pool = list(range(m))
    else:
        drawn = torch.randint(0, m, (candidates,), generator=generator).tolist()
        pool = sorted({c for c in drawn + list(extra) if 0 <= c < m})
    saved = table.assignment[entities].clone()
    current = saved.long()
    base = per_entity() if candidates is not None else None
    losses = torch.empty(len(entities), len(pool), device=device)
    try:
        for j, c in enumerate(pool):
            table.assignment[entities] = c
            losses[:, j] = per_entity()
    finally:
        table.assignment[entities] = saved
    if base is None:  # every live cluster was tried, the current one included
        base = losses.gather(1, current.unsqueeze(1)).squeeze(1)
    free = torch.rand(len(entities), generator=generator).to(device) >= keep_prob
    targets, gain = loss_moves(losses, torch.tensor(pool, device=device), current, base, free)
    moved, _ = move(table, entities, targets, gain)
    return moved
