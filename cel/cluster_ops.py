"""CEL's cluster optimisation on a ``Recommender``: which cluster to split, its members'
gradients, and every entity's exact loss in every cluster (one pass of the other side).

The split and the moves themselves are ``cel.clusters``'. Both work on whatever interactions
they are given (the whole training set offline, a recent window in a stream) and return
counters; neither touches entities absent from that data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cel.clusters import KEEP_PROB, loss_moves, move, optimizer_rows, split_cluster
from cel.interactions import Interactions
from cel.recommender import Recommender


def _entity_index(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.unique(ids, return_inverse=True)


@torch.no_grad()
def cluster_losses(rec: Recommender, side: str, data: Interactions,
                   chunk: int = 262_144) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of each entity (of ``side``) in ``data`` if it used each active cluster row.

    Returns ``(entities, losses)``: the distinct entity ids and a ``(len(entities), M)``
    matrix of summed exact model losses. Dense O(M·|data|), as in the reference code.
    """
    table = rec.table(side)
    entities, inverse = _entity_index(data.ids(side))
    m = table.num_active
    losses = torch.zeros(len(entities), m, device=entities.device)
    for start in range(0, len(data), chunk):
        part = data.subset(slice(start, start + chunk))
        inv = inverse[start:start + chunk]
        ids = part.ids(side)
        own = table.own_state(ids)  # the entity's own scale, bias, vector move with it
        other = "item" if side == "user" else "user"
        fixed = {f"{other}_emb": (rec.item_table if side == "user" else rec.user_table)(
            part.ids(other))}  # the other side's rows do not depend on c: look up once
        for c in range(m):
            rows = table.personalise(table.weight[c].expand(len(part), -1), ids, own)
            score = rec.score(part, **{f"{side}_emb": rows}, **fixed)
            losses[:, c].index_add_(0, inv, rec.loss(score, part.labels))
    return entities, losses


@torch.no_grad()
def reassign(rec: Recommender, side: str, data: Interactions, keep_prob: float = KEEP_PROB,
             generator: torch.Generator | None = None, min_count: int = 0,
             closed_row: int | None = None,
             closed_max_count: int = -1) -> dict[str, int]:
    """Move each entity of ``data`` to the cluster with the lowest loss on its interactions.

    Damping: an entity keeps its cluster with probability ``keep_prob``. An entity only moves
    when the new cluster's loss is strictly lower, so a move never increases its own loss.
    Entities with fewer
    than ``min_count`` interactions do not move at all. ``closed_row``: a row (the prior)
    that only entities with at most ``closed_max_count`` interactions may move into.
    """
    table = rec.table(side)
    entities, losses = cluster_losses(rec, side, data)
    current = table.assignment[entities].long()
    current_loss = losses.gather(1, current.unsqueeze(1)).squeeze(1)
    if closed_row is not None and closed_row < table.num_active:
        _, inverse = _entity_index(data.ids(side))
        n = torch.bincount(inverse, minlength=len(entities))
        barred = (n > closed_max_count) & (current != closed_row)
        losses[barred, closed_row] = torch.inf
    coins = torch.rand(len(entities), generator=generator).to(entities.device)
    free = coins >= keep_prob
    if min_count > 0:
        _, inverse = _entity_index(data.ids(side))
        free &= torch.bincount(inverse, minlength=len(entities)) >= min_count
    candidates = torch.arange(table.num_active, device=losses.device)
    targets, gain = loss_moves(losses, candidates, current, current_loss, free)
    moved = len(move(table, entities, targets, gain)[0])
    return {"scored": len(entities), "moved": moved}


COLD_POLICIES = ("largest", "popular", "prior", "keep")


@torch.no_grad()
def place_cold(rec: Recommender, side: str, has_data: torch.Tensor,
               policy: str = "largest", data: Interactions | None = None,
               prior: int = 0) -> int:
    """Give entities with no data a default cluster instead of leaving them in cluster 0.

    ``largest``: the cluster with the most data-bearing members (where rare entities gather);
    ``popular``: the cluster with the most interactions in ``data``; ``prior``: the cluster
    ``prior`` (a dedicated row learnt from rarely seen entities); ``keep``: do nothing.
    """
    if policy == "keep":
        return 0
    table = rec.table(side)
    assignment = table.assignment.long()
    if policy == "prior":
        weight = torch.zeros(table.max_clusters, dtype=torch.long, device=assignment.device)
        weight[prior] = 1
    elif policy == "largest":
        weight = torch.bincount(assignment[has_data], minlength=table.max_clusters)
    elif policy == "popular" and data is not None:
        weight = torch.bincount(assignment[data.ids(side)], minlength=table.max_clusters)
    else:
        raise ValueError(f"unknown cold policy {policy!r}")
    target = int(weight[:table.num_active].argmax())
    cold = (~has_data).nonzero().flatten()
    return len(move(table, cold, torch.full_like(cold, target))[0])


def choose_cluster(rec: Recommender, side: str, data: Interactions,
                   exclude: int | None = None) -> int:
    """The cluster to split next: the one with the most interactions in ``data`` (as the
    reference code). ``exclude``: a cluster never split (the dedicated prior row)."""
    table = rec.table(side)
    m = table.num_active
    weight = torch.bincount(table.clusters_of(data.ids(side)), minlength=m)[:m].float()
    if exclude is not None and exclude < m:
        weight[exclude] = -torch.inf
    return int(weight.argmax())


def member_gradients(rec: Recommender, side: str, data: Interactions, cluster: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member gradient of the data loss w.r.t. the shared row, for one cluster's members.

    Memory O(|members|·d): only the interactions of that cluster are differentiated.
    """
    table = rec.table(side)
    mask = table.clusters_of(data.ids(side)) == cluster
    part = data.subset(mask)
    members, inverse = _entity_index(part.ids(side))
    emb = table(part.ids(side)).detach().requires_grad_(True)
    loss = rec.loss(rec.score(part, **{f"{side}_emb": emb}), part.labels).sum()
    (grad,) = torch.autograd.grad(loss, emb)
    per_member = torch.zeros(len(members), grad.shape[1], device=grad.device)
    return members, per_member.index_add_(0, inverse, grad)


def split(rec: Recommender, side: str, data: Interactions,
          optimizer: torch.optim.Optimizer | None = None, exclude: int | None = None
          ) -> dict[str, int]:
    """One GPCA split of the chosen cluster; the child row starts as a copy of the parent.

    Returns ``{"split": 0 or 1, "parent", "child", "moved"}``; no split when the budget is
    spent or the members' gradients agree.
    """
    table = rec.table(side)
    if table.num_active >= table.max_clusters or len(data) == 0:
        return {"split": 0, "parent": -1, "child": -1, "moved": 0}
    parent = choose_cluster(rec, side, data, exclude)
    if parent == exclude:
        return {"split": 0, "parent": -1, "child": -1, "moved": 0}
    members, grads = member_gradients(rec, side, data, parent)
    # the child inherits the parent's optimiser moments
    done = split_cluster(table, parent, members, grads, optimizer_rows(optimizer, table.weight))
    if done is None:
        return {"split": 0, "parent": parent, "child": -1, "moved": 0}
    return {"split": 1, "parent": parent, "child": done.child, "moved": done.moved.numel()}


@torch.no_grad()
def assign_extra(rec: Recommender, side: str, data: Interactions, prior: float = 10.0,
                  min_count: int = 20, reg: float = 0.0, chunk: int = 131_072
                  ) -> dict[str, int]:
    """Choose each entity's extra rows (tables with ``extra_rows``) by matching pursuit.

    For each extra slot j in turn: with that slot's term removed, an entity's score on
    interaction k is ``b_k``; adding ``s * row_c`` adds ``s * x_kc`` (``x_kc``: the score
    change of adding row c's factor columns; exact for MF, a linearisation otherwise). Per
    candidate row c the best weight is ``s_c = sum(e x) / (sum(w x^2) + lam_c)`` (squared
    loss: e = label - b, w = 1; log loss: one Newton step, e = label - sigmoid(b),
    w = p(1 - p)), which lowers the loss by ``sum(e x)^2 / (sum(w x^2) + lam_c)``; the entity
    takes the row with the largest gain (never its first row nor one its other slots use) and
    ``s_c``. ``lam_c = prior + reg * n * |row_c|^2``: the shrinkage prior of the weight plus
    the L2 its interactions put on it. Entities with fewer than ``min_count`` interactions
    get weight 0 (no extra rows).
    """
    table = rec.table(side)
    if table.scale2 is None:
        raise ValueError(f"the {side} table has no extra rows")
    entities, inverse = _entity_index(data.ids(side))
    n = torch.bincount(inverse, minlength=len(entities)).float()
    m = table.num_active
    rows = table.weight[:m].clone()
    rows[:, -1] = 0  # the factor columns only
    lam = prior + reg * n.unsqueeze(1) * rows.pow(2).sum(dim=1).unsqueeze(0)
    other = "item" if side == "user" else "user"
    other_table = rec.item_table if side == "user" else rec.user_table
    changed = 0
    for j in range(table.extra_rows):
        num = torch.zeros(len(entities), m, device=entities.device)
        den = torch.zeros(len(entities), m, device=entities.device)
        for start in range(0, len(data), chunk):
            part = data.subset(slice(start, start + chunk))
            inv = inverse[start:start + chunk]
            ids = part.ids(side)
            fixed = {f"{other}_emb": other_table(part.ids(other))}
            term = F.pad(table.weight[table.assignment2[ids, j].long(), :-1]
                         * table.scale2[ids, j].unsqueeze(1), (0, 1))
            base_emb = table(ids) - term
            base = rec.score(part, **{f"{side}_emb": base_emb}, **fixed)
            if rec.task == "binary":
                p = torch.sigmoid(base)
                e, w = part.labels - p, p * (1 - p)
            else:
                e, w = part.labels - base, torch.ones_like(base)
            for c in range(m):
                x = rec.score(part, **{f"{side}_emb": base_emb + rows[c]}, **fixed) - base
                num[:, c].index_add_(0, inv, e * x)
                den[:, c].index_add_(0, inv, w * x * x)
        den = (den + lam).clamp(min=1e-12)  # a row with no factor part: gain 0, not nan
        gain = num.pow(2) / den
        taken = [table.assignment[entities].long().unsqueeze(1)]
        taken += [table.assignment2[entities, k].long().unsqueeze(1)
                  for k in range(table.extra_rows) if k != j]
        for used in taken:
            gain.scatter_(1, used, -torch.inf)
        best_gain, best = gain.max(dim=1)
        weight = (num / den).gather(1, best.unsqueeze(1)).squeeze(1)
        # fewer active rows than slots (early in growth): a slot with no free row stays off
        usable = (n >= min_count) & torch.isfinite(best_gain)
        weight = torch.where(usable, weight, torch.zeros_like(weight))
        changed += int((table.assignment2[entities, j].long() != best).sum())
        table.assignment2[entities, j] = best.to(table.assignment2.dtype)
        table.scale2[entities, j] = weight
    return {"scored": len(entities), "changed": changed}
