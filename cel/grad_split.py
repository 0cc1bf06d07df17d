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

from cel.clusters import optimizer_rows, split_cluster
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
            done = split_cluster(self.table, self.target, members, per_member,
                                 optimizer_rows(self.optimizer, self.table.weight))
            if done is not None:
                if self.on_split is not None:
                    self.on_split(done.parent, done.child)
                self.splits += 1
                split = True
        m = self.table.num_active
        self.target = int(self._hits[:m].argmax())
        self._hits.zero_()
        self._parts.clear()
        return split
