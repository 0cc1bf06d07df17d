"""Loss-based reassignment of a window's entities among a few candidate clusters.

Like ``cel.grad_split.reassign_by_loss`` (every entity tried in a cluster at once, damped
moves, no cluster left empty), but bounded for streaming: besides each entity's current
cluster only ``candidates`` clusters are tried (random live ones plus any given, e.g. the
newest split child), and the never-empty rule works on the cluster counts, so the cost is
O((candidates + 1) x window forward passes + clusters), whatever the number of entities.

``move_by_votes`` moves entities by co-click votes instead (see ``DeepLearner._votes``), and
``EntityEvidence`` keeps the bounded per-entity history both judge on.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

import numpy as np
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


@torch.no_grad()
def move_by_votes(table: ClusteredEmbedding, entities: torch.Tensor, votes: torch.Tensor,
                  generator: torch.Generator, ratio: float = 1.5,
                  keep_prob: float = 0.31) -> torch.Tensor:
    """Move each of ``entities`` (distinct) to the live cluster with the most votes per member
    (``votes``: one row per entity, one column per live cluster) when that beats its own
    cluster's by ``ratio``; damped like ``reassign_among``, never emptying a live cluster.
    Returns the ids that moved."""
    m = table.num_active
    if m < 2 or len(entities) == 0:
        return entities[:0]
    device = table.assignment.device
    entities = entities.to(device)
    density = votes.to(device) / table.counts[:m].clamp(min=1).to(votes.dtype)
    current = table.assignment[entities].long()
    best_v, best = density.max(dim=1)
    own = density.gather(1, current.unsqueeze(1)).squeeze(1)
    coins = torch.rand(len(entities), generator=generator).to(device)
    move = (best_v > own * ratio) & (coins >= keep_prob) & (best != current)
    counts = table.counts[:m]
    leaving = torch.bincount(current[move], minlength=m)
    arriving = torch.bincount(best[move], minlength=m)
    for c in ((counts - leaving + arriving == 0) & (leaving > 0)).nonzero().flatten().tolist():
        move[(move & (current == c)).nonzero().flatten()[0]] = False
    moved, src, dst = entities[move], current[move], best[move]
    table.assignment[moved] = dst.to(table.assignment.dtype)
    table.counts.index_add_(0, src, -torch.ones_like(src))
    table.counts.index_add_(0, dst, torch.ones_like(dst))
    return moved


class EntityEvidence:
    """The last ``per_entity`` interactions of at most ``capacity`` entities of one side.

    Each interaction is ``(counterpart id, label, scenario index, time)``. The entity touched
    least recently is evicted past ``capacity``, so memory is O(capacity x per_entity) and a
    lookup O(per_entity), whatever the number of entities. Reassignment judges an entity on
    all its recent interactions instead of the one or two of the current window.
    """

    def __init__(self, capacity: int, per_entity: int) -> None:
        self.capacity, self.per_entity = capacity, per_entity
        self._rows: OrderedDict[int, deque[tuple[int, float, int, float]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, entity: int, other: int, label: float, scenario: int, time: float) -> None:
        rows = self._rows.get(entity)
        if rows is None:
            rows = self._rows[entity] = deque(maxlen=self.per_entity)
            if len(self._rows) > self.capacity:
                self._rows.popitem(last=False)
        else:
            self._rows.move_to_end(entity)
        rows.append((other, label, scenario, time))

    def of(self, entity: int) -> list[tuple[int, float, int, float]]:
        return list(self._rows.get(entity, ()))

    def export(self, prefix: str) -> dict[str, np.ndarray]:
        """Arrays of the whole buffer, least recently touched entity first."""
        entities = np.array(list(self._rows), np.int64)
        sizes = np.array([len(r) for r in self._rows.values()], np.int64)
        flat = [row for rows in self._rows.values() for row in rows]
        return {f"{prefix}.entities": entities, f"{prefix}.sizes": sizes,
                f"{prefix}.other": np.array([r[0] for r in flat], np.int64),
                f"{prefix}.label": np.array([r[1] for r in flat], np.float64),
                f"{prefix}.scenario": np.array([r[2] for r in flat], np.int64),
                f"{prefix}.time": np.array([r[3] for r in flat], np.float64)}

    def load(self, arrays: dict[str, np.ndarray], prefix: str) -> None:
        self._rows.clear()
        if f"{prefix}.entities" not in arrays:
            return
        other, label = arrays[f"{prefix}.other"], arrays[f"{prefix}.label"]
        scen, time = arrays[f"{prefix}.scenario"], arrays[f"{prefix}.time"]
        k = 0
        for entity, size in zip(arrays[f"{prefix}.entities"].tolist(),
                                arrays[f"{prefix}.sizes"].tolist(), strict=True):
            self._rows[int(entity)] = deque(
                ((int(other[j]), float(label[j]), int(scen[j]), float(time[j]))
                 for j in range(k, k + size)), maxlen=self.per_entity)
            k += size
