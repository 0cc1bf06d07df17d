"""Offline CEL: alternate embedding optimisation and cluster optimisation.

Mini-batch steps on the embeddings; every ``split_every`` steps one GPCA split per clustered
side until the budget is reached; reassignment every ``reassign_every`` steps (the interval
doubles during growth, as in the reference code's decreasing frequency) and after each epoch
until ``reassign_epochs``; then, optionally, a personalisation phase.

``TrainConfig``'s defaults are the reference code's plain CEL: every option past it is off
(a separate L2 for CEL, a dedicated prior row for rarely seen entities, a minimum count for
reassignment, shrinkage priors for the own per-entity biases and scales of tables built with
``entity_bias``/``entity_scale``, the choice of extra rows for tables built with
``extra_rows``). celrec's chosen values are declared once, in ``celrec.presets.Preset``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from cel import cluster_ops
from cel.clusters import KEEP_PROB
from cel.interactions import Interactions
from cel.recommender import Recommender
from cel.tables import ClusteredEmbedding, FullEmbedding, restore, snapshot


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 1024
    lr: float = 0.005
    reg: float = 0.05  # per-example L2 on the embeddings a batch uses
    split_every: int = 10  # steps between splits during growth
    reassign_every: int = 40  # steps between reassignments during growth (then doubles)
    reassign_epochs: int = 20  # reassign after each epoch up to this one; 0: never after growth
    keep_prob: float = KEEP_PROB  # damping: chance an entity keeps its cluster at a reassignment
    cold_policy: str = "largest"  # where entities with no training data go
    personal_epochs: int = 0  # personalisation phase length (0: off)
    personal_l2: float = 1.0  # pull of own vectors towards their cluster row
    seed: int = 0
    # ``reg`` of every table when the recommender has a clustered side (None: ``reg``): CEL's
    # shared rows overfit less, so its best L2 is lower than a full table's
    cel_reg: float | None = None
    # >= 0: entities with at most this many training interactions start in a dedicated prior
    # row (cluster 0, never split) that learns what rarely seen entities look like; entities
    # without data go there too. -1: off (everyone starts in one cluster).
    prior_max_count: int = -1
    reassign_min_count: int = 0  # entities with fewer interactions are never reassigned
    # True: entities with more than ``prior_max_count`` interactions may not move into the
    # prior row, which then stays a row of rarely seen entities only
    prior_exclusive: bool = False
    # clustered tables with ``entity_bias``: an L2 pull of each entity's own bias towards
    # its cluster's bias, of total strength ``entity_bias_prior`` per entity whatever its
    # number of interactions n (each interaction carries 1/n of it): the classic shrinkage
    # sum(residual) / (n + prior), so a rarely seen entity keeps close to its cluster's bias
    entity_bias_prior: float = 0.0
    # the same for an own scale (``entity_scale``), pulled towards 1 (the cluster's vector)
    entity_scale_prior: float = 0.0
    # clustered tables with ``extra_rows`` (more cluster rows with own weights per entity):
    # the weights' shrinkage towards 0 (same form as ``entity_bias_prior``), and the
    # fewest interactions an entity needs to get extra rows; the rows and their weights are
    # chosen at every reassignment by ``cluster_ops.assign_extra`` (closed-form matching
    # pursuit), then trained by gradient with the rest
    extra_rows_prior: float = 10.0
    extra_rows_min_count: int = 20
    # >= 0: before training, fit the biases-only model (global mean, user and item biases by
    # alternating shrunk means, this prior as a count) and start every table's biases from
    # it, so the factor term learns what the biases leave (squared loss only); -1: off
    bias_start_prior: float = -1.0
    # > 0: this share of the training interactions is held out to choose the number of
    # epochs (0 included: the start alone) and, with ``bias_start_prior`` >= 0, whether to
    # start from the biases-only model; then the model trains on all the data (see ``fit``)
    holdout: float = 0.0
    # > 0 (squared loss, with a holdout and ``bias_start_prior`` >= 0): keep the epochs the
    # holdout chose only when their held-out loss beats the biases-only model's by this many
    # standard errors of the per-example difference (paired); else the biases alone
    holdout_z: float = 0.0


@dataclass
class History:
    epoch_loss: list[float] = field(default_factory=list)
    valid: list[float] = field(default_factory=list)
    splits: int = 0
    moves: int = 0
    reassignments: int = 0
    steps: int = 0
    events: int = 0
    best_epoch: int | None = None  # with a holdout: the epoch kept (0: the start)


def train_step(rec: Recommender, optimizer: torch.optim.Optimizer, batch: Interactions,
               reg: float, personal_l2: float = 0.0,
               penalty: Callable[[Interactions], torch.Tensor] | None = None) -> float:
    """One gradient step; returns the batch's mean data loss. ``penalty(batch)`` is added to
    the training loss."""
    u, i = rec.user_table(batch.users), rec.item_table(batch.items)
    data_loss = rec.loss(rec.model(u, i, batch.context), batch.labels).mean()
    loss = data_loss + reg * (u.pow(2).sum(dim=1) + i.pow(2).sum(dim=1)).mean()
    if personal_l2 > 0:
        for side in rec.clustered_sides():
            loss = loss + personal_l2 * rec.table(side).personal_penalty(batch.ids(side))
    if penalty is not None:
        loss = loss + penalty(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(data_loss.detach())


@torch.no_grad()
def baseline_biases(train: Interactions, num_users: int, num_items: int, prior: float,
                    sweeps: int = 10) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The biases-only model ``mu + b_u + b_i`` by alternating shrunk means (as Surprise's
    ``BaselineOnly`` with ALS): ``b_i = sum(r - mu - b_u) / (n_i + prior)``, then the users,
    ``sweeps`` times. Returns ``(mu, b_u, b_i)``."""
    y = train.labels.float()
    mu = float(y.mean()) if len(y) else 0.0
    bu = torch.zeros(num_users, device=y.device)
    bi = torch.zeros(num_items, device=y.device)
    nu = torch.bincount(train.users, minlength=num_users).float() + prior
    ni = torch.bincount(train.items, minlength=num_items).float() + prior
    for _ in range(sweeps):
        bi = torch.zeros_like(bi).index_add_(0, train.items, y - mu - bu[train.users])
        bi = bi / ni.clamp(min=1e-9)
        bu = torch.zeros_like(bu).index_add_(0, train.users, y - mu - bi[train.items])
        bu = bu / nu.clamp(min=1e-9)
    return mu, bu, bi


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
        self.reg = config.reg
        if rec.clustered_sides() and config.cel_reg is not None:
            self.reg = config.cel_reg
        self._next_reassign = config.reassign_every
        self._interval = config.reassign_every
        self._inv_count: dict[str, torch.Tensor] = {}  # side -> 1 / n per entity
        # per-example held-out losses at the best epoch of the last run with a holdout
        self._best_losses = torch.zeros(0)

    def _start_own_priors(self, train: Interactions) -> None:
        cfg = self.config
        for side in self.rec.clustered_sides():
            table = self.rec.table(side)
            if ((table.bias is not None and cfg.entity_bias_prior > 0)
                    or (table.scale is not None and cfg.entity_scale_prior > 0)
                    or (table.scale2 is not None and cfg.extra_rows_prior > 0)):
                n = torch.bincount(train.ids(side), minlength=table.num_entities)
                self._inv_count[side] = 1.0 / n.clamp(min=1)

    def _own_penalty(self, batch: Interactions) -> torch.Tensor:
        """Batch mean of prior/n_e * (own - base)^2 for each entity's own bias and scale."""
        cfg = self.config
        total = batch.labels.new_zeros(())
        for side, inv in self._inv_count.items():
            table, ids = self.rec.table(side), batch.ids(side)
            if table.bias is not None and cfg.entity_bias_prior > 0:
                total = total + cfg.entity_bias_prior * (inv[ids] * table.bias[ids].pow(2)).mean()
            if table.scale is not None and cfg.entity_scale_prior > 0:
                dev = (table.scale[ids] - 1).pow(2)
                total = total + cfg.entity_scale_prior * (inv[ids] * dev).mean()
            if table.scale2 is not None and cfg.extra_rows_prior > 0:
                second = table.scale2[ids].pow(2).sum(dim=1)
                total = total + cfg.extra_rows_prior * (inv[ids] * second).mean()
        return total

    def _growing(self) -> bool:
        return any(self.rec.table(s).num_active < self.rec.table(s).max_clusters
                   for s in self.rec.clustered_sides())

    @property
    def _prior(self) -> int | None:
        return 0 if self.config.prior_max_count >= 0 else None

    @torch.no_grad()
    def start_biases(self, train: Interactions) -> None:
        """Every bias starts at the biases-only model's: the global bias, full tables' bias
        column, clustered tables' own biases (their rows' bias column at 0), or without own
        biases the members' mean in each cluster row."""
        users, items = self.rec.user_table, self.rec.item_table
        mu, bu, bi = baseline_biases(train, users.num_entities, items.num_entities,
                                     self.config.bias_start_prior)
        self.rec.model.global_bias.fill_(mu)
        for table, b in ((users, bu), (items, bi)):
            if isinstance(table, FullEmbedding):
                table.weight[:, -1] = b
            elif isinstance(table, ClusteredEmbedding) and table.bias is not None:
                table.bias.copy_(b)
                table.weight[:, -1] = 0
            elif isinstance(table, ClusteredEmbedding):
                rows = table.assignment.long()
                total = torch.zeros(table.max_clusters).index_add_(0, rows, b)
                table.weight[:, -1] = total / table.counts.clamp(min=1)

    def start_prior(self, train: Interactions) -> None:
        """Rare entities in row 0 (the prior), the others in row 1."""
        for side in self.rec.clustered_sides():
            table = self.rec.table(side)
            if table.max_clusters < 2:
                continue
            counts = torch.bincount(train.ids(side), minlength=table.num_entities)
            table.num_active = 2
            table.assign((counts > self.config.prior_max_count).long())

    def cluster_step(self, train: Interactions) -> None:
        """Splits and reassignments due after the current step."""
        cfg, hist = self.config, self.history
        if self._growing() and hist.steps % cfg.split_every == 0:
            for side in self.rec.clustered_sides():
                out = cluster_ops.split(self.rec, side, train, self.optimizer,
                                        self._prior)
                hist.splits += out["split"]
        if self.rec.clustered_sides() and hist.steps >= self._next_reassign and self._growing():
            self.reassign(train)
            self._interval *= 2
            self._next_reassign = hist.steps + self._interval

    def reassign(self, train: Interactions) -> None:
        for side in self.rec.clustered_sides():
            out = cluster_ops.reassign(self.rec, side, train, self.config.keep_prob,
                                       self.generator, self.config.reassign_min_count,
                                       self._prior if self.config.prior_exclusive else None,
                                       self.config.prior_max_count)
            table = self.rec.table(side)
            seen = has_data(table.num_entities, train.ids(side))
            policy = "prior" if self._prior is not None else self.config.cold_policy
            cluster_ops.place_cold(self.rec, side, seen, policy, train, prior=self._prior or 0)
            self.history.moves += out["moved"]
            if table.scale2 is not None:
                cfg = self.config
                cluster_ops.assign_extra(self.rec, side, train, cfg.extra_rows_prior,
                                         cfg.extra_rows_min_count, self.reg)
        self.history.reassignments += 1

    def _epoch(self, train: Interactions, personal_l2: float, clusters: bool) -> float:
        cfg = self.config
        order = torch.randperm(len(train), generator=self.generator).to(train.users.device)
        total = 0.0
        for start in range(0, len(train), cfg.batch_size):
            batch = train.subset(order[start:start + cfg.batch_size])
            loss = train_step(self.rec, self.optimizer, batch, self.reg, personal_l2,
                              self._own_penalty if self._inv_count else None)
            total += loss * len(batch)
            self.history.steps += 1
            self.history.events += len(batch)
            if clusters:
                self.cluster_step(train)
        return total / max(len(train), 1)

    @torch.no_grad()
    def _holdout_losses(self, valid: Interactions) -> torch.Tensor:
        return self.rec.loss(self.rec.score(valid), valid.labels)

    def _probe(self, part: Interactions, valid: Interactions, bias_start: float
               ) -> tuple[float, int, torch.Tensor]:
        """Train a probe on ``part``; its best loss on ``valid``, the epoch it was reached
        at (0: the start) and the per-example losses then. The recommender is put back."""
        initial = snapshot(self.rec)
        config = replace(self.config, holdout=0.0, personal_epochs=0,
                         bias_start_prior=bias_start)
        probe = OfflineCEL(self.rec, config)
        best, epoch = probe._run(part, None, valid)
        restore(self.rec, initial)
        return best, epoch, probe._best_losses

    @torch.no_grad()
    def _beats_biases(self, part: Interactions, valid: Interactions,
                      losses: torch.Tensor) -> bool:
        """Whether ``losses`` on ``valid`` beat the biases-only model fitted on ``part`` by
        ``holdout_z`` standard errors of the paired difference."""
        mu, bu, bi = baseline_biases(part, self.rec.user_table.num_entities,
                                     self.rec.item_table.num_entities,
                                     self.config.bias_start_prior)
        floor = (mu + bu[valid.users] + bi[valid.items] - valid.labels.float()).square()
        gain = (floor - losses).double()
        error = float(gain.std()) / max(len(gain), 1) ** 0.5 if len(gain) > 1 else 0.0
        return float(gain.mean()) > self.config.holdout_z * error

    def fit(self, train: Interactions,
            on_epoch: Callable[[int, OfflineCEL], float | None] | None = None) -> History:
        """Run the schedule; ``on_epoch(epoch, self)`` may return a validation metric.

        With a ``holdout``, a held-out share of ``train`` chooses the number of epochs and,
        when ``bias_start_prior`` >= 0, whether to start from the biases-only model (the
        start that scores better there); 0 epochs keeps the start alone. The model then
        trains on all of ``train`` with that choice."""
        cfg = self.config
        if cfg.holdout > 0 and len(train) >= 20:
            order = torch.randperm(len(train), generator=self.generator).to(train.users.device)
            n = max(1, int(cfg.holdout * len(train)))
            part, valid = train.subset(order[n:]), train.subset(order[:n])
            starts = [-1.0] + ([cfg.bias_start_prior] if cfg.bias_start_prior >= 0 else [])
            probes = [(*self._probe(part, valid, start), start) for start in starts]
            _, epochs, losses, start = min(probes, key=lambda p: (p[0], p[1]))
            if (cfg.holdout_z > 0 and epochs > 0 and cfg.bias_start_prior >= 0
                    and self.rec.task == "rating"
                    and not self._beats_biases(part, valid, losses)):
                epochs, start = 0, cfg.bias_start_prior  # the biases alone
            self.config = replace(cfg, epochs=epochs, bias_start_prior=start)
            self.history.best_epoch = epochs
        self._run(train, on_epoch, None)
        if self.config.epochs == 0:  # the start alone: no factor term
            with torch.no_grad():
                for table in (self.rec.user_table, self.rec.item_table):
                    table.weight[:, :-1] = 0
        return self.history

    def _run(self, train: Interactions,
             on_epoch: Callable[[int, OfflineCEL], float | None] | None,
             valid: Interactions | None) -> tuple[float, int]:
        """The schedule; returns the best loss on ``valid`` and the epoch it was reached at
        (0: the start; without ``valid``: inf and the last epoch)."""
        cfg, hist = self.config, self.history
        clustered = bool(self.rec.clustered_sides())
        self._start_own_priors(train)
        if clustered and self._prior is not None:
            self.start_prior(train)
        if cfg.bias_start_prior >= 0 and self.rec.task == "rating":
            self.start_biases(train)
        self._best_losses = (self._holdout_losses(valid) if valid is not None
                             else torch.zeros(0))
        best, best_epoch = float(self._best_losses.mean()) if valid is not None else 0.0, 0
        for epoch in range(cfg.epochs):
            hist.epoch_loss.append(self._epoch(train, 0.0, clustered))
            # the last epochs train on fixed clusters so the rows fit the final assignment
            if clustered and epoch < cfg.reassign_epochs and not self._growing():
                self.reassign(train)
            if valid is not None:
                losses = self._holdout_losses(valid)
                if float(losses.mean()) < best:
                    best, best_epoch, self._best_losses = float(losses.mean()), epoch + 1, losses
            self._report(epoch, on_epoch)
        if clustered and cfg.personal_epochs > 0:
            self.personalise(train, on_epoch)
        if valid is None:
            return float("inf"), cfg.epochs
        return best, best_epoch

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
