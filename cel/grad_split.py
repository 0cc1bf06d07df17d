"""GPCA splits for a ``ClusteredEmbedding`` used anywhere inside a model (sequences, heads).

``cel.cluster_ops.split`` needs a ``Recommender`` (one user row and one item row per example).
SAML and DUPN look the item table up at many positions per example, so this helper watches
the table instead: a forward hook records which clusters were used and, through a gradient
hook on the looked-up rows, sums the gradient per member of the cluster chosen to split next.
Memory stays O(window lookups of that one cluster · d). Every ``split_every`` optimiser steps
the chosen cluster splits along the first principal component of its members' gradients and
the next target is the cluster used most in the window.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.hooks import RemovableHandle

from cel.cluster_ops import apply_moves
from cel.gpca import gpca_split
from cel.tables import ClusteredEmbedding

OnSplit = Callable[[int, int], None]  # (parent, child): copy any rows that share the assignment


class GradientSplitter:
    def __init__(self, table: ClusteredEmbedding, split_every: int = 10,
                 optimizer: torch.optim.Optimizer | None = None,
                 on_split: OnSplit | None = None) -> None:
        self.table, self.split_every = table, split_every
        self.optimizer, self.on_split = optimizer, on_split
        self.target, self.steps, self.splits = 0, 0, 0
        self._hits = torch.zeros(table.max_clusters, dtype=torch.long,
                                 device=table.weight.device)
        self._parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._handle: RemovableHandle | None = table.register_forward_hook(self._on_lookup)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _on_lookup(self, table: ClusteredEmbedding, inputs: tuple, rows: torch.Tensor) -> None:
        if not (torch.is_grad_enabled() and rows.requires_grad) or self._growth_done():
            return
        ids = inputs[0].reshape(-1)
        clusters = table.clusters_of(ids)
        self._hits += torch.bincount(clusters, minlength=table.max_clusters)
        mask = clusters == self.target
        if not bool(mask.any()):
            return
        members = ids[mask]

        def keep(grad: torch.Tensor) -> None:
            self._parts.append((members, grad.reshape(-1, grad.shape[-1])[mask].detach()))

        rows.register_hook(keep)

    def _growth_done(self) -> bool:
        return self.table.num_active >= self.table.max_clusters

    @torch.no_grad()
    def step(self) -> bool:
        """Call after each optimiser step; returns whether a split happened."""
        self.steps += 1
        if self.steps % self.split_every or self._growth_done():
            return False
        split = False
        if self._parts:
            ids = torch.cat([p[0] for p in self._parts])
            grads = torch.cat([p[1] for p in self._parts])
            members, inverse = torch.unique(ids, return_inverse=True)
            per_member = torch.zeros(len(members), grads.shape[1], device=grads.device)
            per_member.index_add_(0, inverse, grads.float())
            moving = gpca_split(per_member)
            if bool(moving.any()):
                child = self.table.split(self.target, members[moving])
                self._copy_optimizer_rows(self.target, child)
                if self.on_split is not None:
                    self.on_split(self.target, child)
                self.splits += 1
                split = True
        m = self.table.num_active
        self.target = int(self._hits[:m].argmax())
        self._hits.zero_()
        self._parts.clear()
        return split

    def _copy_optimizer_rows(self, parent: int, child: int) -> None:
        if self.optimizer is None:
            return
        for value in self.optimizer.state.get(self.table.weight, {}).values():
            if torch.is_tensor(value) and value.shape == self.table.weight.shape:
                value[child] = value[parent]


@torch.no_grad()
def reassign_by_loss(table: ClusteredEmbedding, ids: torch.Tensor,
                     sample_losses: Callable[[], torch.Tensor], keep_prob: float = 0.31,
                     generator: torch.Generator | None = None) -> int:
    """Move each entity in ``ids`` to the active cluster with the lowest summed loss.

    ``sample_losses()`` returns the per-sample loss of the window whose entity ids (of this
    table) are ``ids``, under the table's current assignment; each cluster is tried for every
    entity at once (valid while a sample's loss depends on one entity of this table). Dense
    O(M·window), like ``cel.cluster_ops.reassign``, whose damping and never-empty rule apply.
    """
    entities, inverse = torch.unique(ids, return_inverse=True)
    saved = table.assignment.clone()
    losses = torch.zeros(len(entities), table.num_active, device=ids.device)
    try:
        for c in range(table.num_active):
            table.assignment[entities] = c
            losses[:, c].index_add_(0, inverse, sample_losses().float())
    finally:
        table.assignment.copy_(saved)
    current = saved[entities].long()
    current_loss = losses.gather(1, current.unsqueeze(1)).squeeze(1)
    best_loss, best = losses.min(dim=1)
    coins = torch.rand(len(entities), generator=generator).to(entities.device)
    move = (best_loss < current_loss - 1e-9 * current_loss.abs()) & (coins >= keep_prob)
    return apply_moves(table, entities, torch.where(move, best, current),
                       current_loss - best_loss)
