"""Offline CEL: alternate embedding optimisation and cluster optimisation.

Mini-batch steps on the embeddings; every ``split_every`` steps one GPCA split per clustered
side until the budget is reached; reassignment every ``reassign_every`` steps (the interval
doubles during growth, as in the reference code's decreasing frequency) and after each epoch
until ``reassign_epochs``; then, optionally, a personalisation phase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cel import cluster_ops
from cel.interactions import Interactions
from cel.recommender import Recommender
from cel.tables import ClusteredEmbedding


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 0.005
    reg: float = 0.05  # per-example L2 on the embeddings a batch uses
    split_every: int = 10  # steps between splits during growth
    split_choice: str = "interactions"
    reassign_every: int = 40  # steps between reassignments during growth (then doubles)
    reassign_epochs: int = 20  # reassign after each epoch up to this one; 0: never after growth
    keep_prob: float = 0.31  # damping: chance an entity keeps its cluster at a reassignment
    cold_policy: str = "largest"  # where entities with no training data go
    personal_epochs: int = 0  # personalisation phase length (0: off)
    personal_l2: float = 1.0  # pull of own vectors towards their cluster row
    seed: int = 0


@dataclass
class History:
    epoch_loss: list[float] = field(default_factory=list)
    valid: list[float] = field(default_factory=list)
    splits: int = 0
    moves: int = 0
    reassignments: int = 0
    steps: int = 0
    events: int = 0


def train_step(rec: Recommender, optimizer: torch.optim.Optimizer, batch: Interactions,
               reg: float, personal_l2: float = 0.0) -> float:
    """One gradient step; returns the batch's mean data loss."""
    u, i = rec.user_table(batch.users), rec.item_table(batch.items)
    data_loss = rec.loss(rec.model(u, i, batch.context), batch.labels).mean()
    loss = data_loss + reg * (u.pow(2).sum(dim=1) + i.pow(2).sum(dim=1)).mean()
    if personal_l2 > 0:
        for side in rec.clustered_sides():
            loss = loss + personal_l2 * rec.table(side).personal_penalty(batch.ids(side))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(data_loss.detach())


def has_data(num_entities: int, ids: torch.Tensor) -> torch.Tensor:
    return torch.bincount(ids, minlength=num_entities) > 0


class OfflineCEL:
    """Trains a ``Recommender`` whose clustered sides follow the CEL procedure.

    Non-clustered recommenders (full, hashing) train with the same loop and no cluster steps,
    so every method is compared under one optimiser and schedule.
    """

    def __init__(self, rec: Recommender, config: TrainConfig) -> None:
        self.rec, self.config = rec, config
        self.generator = torch.Generator().manual_seed(config.seed)
        self.optimizer = torch.optim.Adam(rec.parameters(), lr=config.lr)
        self.history = History()
        self._next_reassign = config.reassign_every
        self._interval = config.reassign_every

    def _growing(self) -> bool:
        return any(self.rec.table(s).num_active < self.rec.table(s).max_clusters
                   for s in self.rec.clustered_sides())

    def cluster_step(self, train: Interactions) -> None:
        """Splits and reassignments due after the current step."""
        cfg, hist = self.config, self.history
        if self._growing() and hist.steps % cfg.split_every == 0:
            for side in self.rec.clustered_sides():
                out = cluster_ops.split(self.rec, side, train, cfg.split_choice,
                                        self.optimizer, self.generator)
                hist.splits += out["split"]
        if self.rec.clustered_sides() and hist.steps >= self._next_reassign and self._growing():
            self.reassign(train)
            self._interval *= 2
            self._next_reassign = hist.steps + self._interval

    def reassign(self, train: Interactions) -> None:
        for side in self.rec.clustered_sides():
            out = cluster_ops.reassign(self.rec, side, train, self.config.keep_prob,
                                       self.generator)
            table = self.rec.table(side)
            seen = has_data(table.num_entities, train.ids(side))
            cluster_ops.place_cold(self.rec, side, seen, self.config.cold_policy, train)
            self.history.moves += out["moved"]
        self.history.reassignments += 1

    def _epoch(self, train: Interactions, personal_l2: float, clusters: bool) -> float:
        cfg = self.config
        order = torch.randperm(len(train), generator=self.generator).to(train.users.device)
        total = 0.0
        for start in range(0, len(train), cfg.batch_size):
            batch = train.subset(order[start:start + cfg.batch_size])
            total += train_step(self.rec, self.optimizer, batch, cfg.reg, personal_l2) * len(batch)
            self.history.steps += 1
            self.history.events += len(batch)
            if clusters:
                self.cluster_step(train)
        return total / max(len(train), 1)

    def fit(self, train: Interactions,
            on_epoch: Callable[[int, OfflineCEL], float | None] | None = None) -> History:
        """Run the schedule; ``on_epoch(epoch, self)`` may return a validation metric."""
        cfg, hist = self.config, self.history
        clustered = bool(self.rec.clustered_sides())
        for epoch in range(cfg.epochs):
            hist.epoch_loss.append(self._epoch(train, 0.0, clustered))
            # the last epochs train on fixed clusters so the rows fit the final assignment
            if clustered and epoch < cfg.reassign_epochs and not self._growing():
                self.reassign(train)
            self._report(epoch, on_epoch)
        if clustered and cfg.personal_epochs > 0:
            self.personalise(train, on_epoch)
        return hist

    def personalise(self, train: Interactions,
                    on_epoch: Callable[[int, OfflineCEL], float | None] | None = None) -> None:
        """Own vectors on top of the (now fixed) clusters, pulled towards the cluster row."""
        cfg = self.config
        for side in self.rec.clustered_sides():
            table: ClusteredEmbedding = self.rec.table(side)
            table.enable_personal()
            self.optimizer.add_param_group({"params": [table.personal]})
        for epoch in range(cfg.personal_epochs):
            self.history.epoch_loss.append(self._epoch(train, cfg.personal_l2, False))
            self._report(cfg.epochs + epoch, on_epoch)

    def _report(self, epoch: int, on_epoch: Callable[[int, OfflineCEL], float | None] | None
                ) -> None:
        if on_epoch is not None:
            value = on_epoch(epoch, self)
            if value is not None:
                self.history.valid.append(float(value))
