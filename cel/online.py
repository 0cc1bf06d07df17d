"""Accelerated, online CEL: the per-micro-batch update used by the streaming trainer.

Every step costs O(batch), never O(known entities) or O(history length):
- one gradient step on the cluster rows the batch touched, averaged per cluster;
- reassignment of only the entities in the batch, each scored on its last ``history``
  interactions (a per-entity ring buffer) against ``candidates`` clusters;
- GPCA splits from gradients the backward pass already produced, accumulated only for
  members of the cluster chosen to split next;
- per-entity state for at most ``state_capacity`` entities per side, exact LRU eviction
  through an append-only touch log (amortised O(1) per touch, no scan of all slots).
Growing the id space doubles the per-entity arrays (amortised O(1) per new id).

Tables are ``(rows, dim + 1)``: the last column is the row's bias, which is the layout of
the interaction models in ``cel.models`` (any ``nn.Module`` with ``forward(u, i[, context])``
over such rows can replace :class:`MFInteraction`; give it ``pairwise`` for speed).
Reassignment scores history entries without context (the ring buffers keep partner and
label only), so a model with context fields must define ``pairwise(users, items)`` with a
default or marginal context.

Typical wiring (the trainer): ``uid, _ = user_ids.lookup_or_add(batch_user_strings)`` (and
the same for items, see :class:`cel.idmap.IdMap`), then
``out = model.step(torch.from_numpy(uid), torch.from_numpy(iid), labels,
return_changes=True)``; ``out.changes`` are the assignment deltas to publish.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cel.clusters import loss_moves, move, split_cluster, vote_moves

SIDES = ("user", "item")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class OnlineCELConfig:
    dim: int = 32
    user_clusters: int = 256  # budget M_max of the user side
    item_clusters: int = 256  # budget M_max of the item side
    cluster_users: bool = True  # False: one row per user (full embedding), no CEL on that side
    cluster_items: bool = True
    loss: str = "logloss"  # "logloss" (binary labels, sigmoid) or "mse" (ratings)
    lr: float = 0.1  # SGD step on the per-cluster mean gradient
    model_lr: float | None = None  # interaction model weights; None: same as lr
    l2: float = 1e-5
    init_std: float = 0.1
    # Live clusters at start, random rows. With both sides clustered, 1 is a saddle: when the
    # other side has a single row, every member's gradient is parallel to it, so GPCA can only
    # split by activity and co-clustering never starts; a few random rows break the symmetry.
    initial_clusters: int = 16
    candidates: int = 8  # clusters scored per touched entity and reassignment
    history: int = 16  # R: per-entity ring buffer of (partner, label)
    state_capacity: int = 100_000  # entities per side holding a ring buffer (LRU)
    reassign_min_history: int = 3  # fewer valid interactions: the entity stays put
    damping: float = 0.1  # probability of keeping the old cluster anyway
    margin: float = 0.005  # a move must lower the mean history loss by at least this
    # Events per split window, whatever the micro-batch size (the trainer's batches follow
    # the traffic: one event or a thousand). Counted in batches, a trickle of small batches
    # split the rows on a few events each and cost planted-group streams 0.035 AUC
    # (bench/results/prequential_tuning.md); 2,000 = the 10 batches of 200 tuned before.
    split_window: int = 2000
    split_min_members: int = 8  # members with gradients needed to split
    initial_capacity: int = 1024  # per-side id space, doubles on demand
    # An own bias per entity next to its cluster row (one float, plus its precision): the
    # first-order term every online peer learns. Each step is a Newton step on the entity's
    # summed gradient in the batch under the loss's curvature bound per event (1/4 for log
    # loss, 2 for squared loss), the precision starting at ``bias_prior_events`` events'
    # worth: b -= sum(g) / (bound * (bias_prior_events + events so far)). An entity seen
    # once moves by about 1/(bias_prior_events + 1) of a full Newton step, a micro-batch never
    # dilutes it, and a frequent entity settles on its shrunk mean residual.
    entity_bias: bool = True
    bias_prior_events: float = 10.0
    bias_lr: float = 0.2  # Adagrad step of the first-sight bias (one number per side)
    # Co-click votes before the loss-based move: an entity moves to the cluster that holds,
    # per member, the most same-side entities sharing a positive partner with it (two hops
    # through the ring buffers), when that beats its own cluster by ``vote_ratio``. Needs no
    # trained rows, so it finds groups from a random start where every gradient looks alike.
    votes: bool = True
    vote_ratio: float = 1.5
    vote_tolerance: float = 0.02  # mean history loss a vote may add and still be taken
    vote_window: int = 16  # latest ring-buffer entries of each partner that vote
    vote_entities: int = 256  # voters per side and step, at most
    # The loss-minimising move (CEL's rule) after the votes; off by default: on the tuning
    # streams it undid what the votes found before the rows were trained
    # (bench/results/prequential_tuning.md).
    loss_reassign: bool = False
    # "mean": SGD on each row's mean gradient in the batch; "adagrad": Adagrad on its summed
    # gradient (a row shared by many entities learns from all their events, and settles).
    row_update: str = "adagrad"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in ("logloss", "mse"):
            raise ValueError(f"loss must be 'logloss' or 'mse', got {self.loss!r}")
        if self.dim < 1 or self.history < 1 or self.state_capacity < 1:
            raise ValueError("dim, history and state_capacity must be positive")
        if self.candidates < 3:
            raise ValueError("candidates must be at least 3")
        if self.split_window < 1 or self.split_min_members < 2:
            raise ValueError("split_window >= 1 and split_min_members >= 2")
        if self.initial_clusters < 1 or min(self.user_clusters, self.item_clusters) < 1:
            raise ValueError("initial_clusters and the cluster budgets must be positive")
        if self.row_update not in ("mean", "adagrad"):
            raise ValueError(f"row_update must be 'mean' or 'adagrad', got {self.row_update!r}")
        if not 0.0 <= self.damping < 1.0:
            raise ValueError("damping must be in [0, 1)")


def _per_side() -> dict[str, int]:
    return {"user": 0, "item": 0}


@dataclass
class StepResult:
    """What one :meth:`OnlineCEL.step` did. Per-side counts are keyed ``user`` / ``item``."""

    events: int
    loss: float = float("nan")  # mean loss BEFORE the update (progressive)
    skipped: bool = False  # the batch was refused: non-finite labels, loss or gradients
    new: dict[str, int] = field(default_factory=_per_side)  # ids first seen
    reassigned: dict[str, int] = field(default_factory=_per_side)
    splits: dict[str, int] = field(default_factory=_per_side)
    clusters: dict[str, int] = field(default_factory=_per_side)  # live rows after the step
    known: dict[str, int] = field(default_factory=_per_side)
    state: dict[str, int] = field(default_factory=_per_side)  # entities with a ring buffer
    # With ``return_changes``: {side: (ids, clusters)} of every id whose assignment was set
    # or changed (new, reassigned, split), and [(side, parent, child, moved ids)].
    changes: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    split_events: list[tuple[str, int, int, torch.Tensor]] = field(default_factory=list)

    def counters(self) -> dict[str, float]:
        """The per-side counts as flat ``{name}_{side}`` numbers (for metrics)."""
        out = {"events": float(self.events), "skipped": float(self.skipped)}
        for name in ("new", "reassigned", "splits", "clusters", "known", "state"):
            for side, value in getattr(self, name).items():
                out[f"{name}_{side}"] = float(value)
        return out


class MFInteraction(nn.Module):
    """Biased dot product: <u, i> + bias_u + bias_i + global bias (rows carry their bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.global_bias = nn.Parameter(torch.zeros(()))

    def forward(self, u: torch.Tensor, i: torch.Tensor,
                context: torch.Tensor | None = None) -> torch.Tensor:
        return (u[..., :-1] * i[..., :-1]).sum(-1) + u[..., -1] + i[..., -1] + self.global_bias

    def pairwise(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(E, A, D) users x (E, B, D) items -> (E, A, B) scores, without (E, A, B, D)."""
        dots = torch.bmm(users[..., :-1], items[..., :-1].transpose(1, 2))
        return dots + users[..., -1:] + items[..., -1].unsqueeze(1) + self.global_bias


def pairwise_scores(model: nn.Module, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """All (user, item) pairs per leading index: (E, A, D), (E, B, D) -> (E, A, B).

    Uses ``model.pairwise`` when there is one; otherwise flattens the pairs into one 2-d
    batch, which works with any row-wise model (e.g. ``cel.models.DeepFM``)."""
    if hasattr(model, "pairwise"):
        return model.pairwise(users, items)
    e, a, d = users.shape
    b = items.shape[1]
    u = users.unsqueeze(2).expand(e, a, b, d).reshape(-1, d)
    i = items.unsqueeze(1).expand(e, a, b, d).reshape(-1, d)
    return model(u, i).reshape(e, a, b)


def _adagrad(value: torch.Tensor, accumulator: torch.Tensor, index: torch.Tensor,
             grad: torch.Tensor, lr: float) -> torch.Tensor:
    """One Adagrad step for the rows ``index`` of a parameter: adds the squared gradient to
    their ``accumulator`` rows (in place) and returns ``value`` moved by it."""
    squares = accumulator[index] + grad.square()
    accumulator[index] = squares
    return value - lr * grad / (squares.sqrt() + 1e-6)


def _group_rank(keys: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Stable sort of ``keys``: (order, rank within equal keys, group size per element,
    unique keys, count per unique key)."""
    order = torch.argsort(keys, stable=True)
    sorted_keys = keys[order]
    uniq, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    group = torch.repeat_interleave(torch.arange(uniq.numel(), device=keys.device), counts)
    rank = torch.arange(keys.numel(), device=keys.device) - starts[group]
    return order, rank, counts[group], uniq, counts


class _Side:
    """Everything one side (users or items) holds. Plain tensors + a few Python ints."""

    def __init__(self, name: str, clustered: bool, budget: int, cfg: OnlineCELConfig,
                 device: torch.device, gen: torch.Generator) -> None:
        self.name = name
        self.clustered = clustered
        self.device = device
        width = cfg.dim + 1
        cap = cfg.initial_capacity
        rows = budget if clustered else cap
        self.max_clusters = budget if clustered else 0
        self.table = torch.zeros(rows, width, device=device)
        self.table[:, :-1].normal_(0.0, cfg.init_std, generator=gen)
        self.table_g2 = torch.zeros(rows if cfg.row_update == "adagrad" else 0, width,
                                    device=device)
        self.assign = torch.full((cap,), -1, dtype=torch.int32, device=device)
        # Own bias per entity and its precision in events (size 0: no own biases).
        bias_cap = cap if cfg.entity_bias else 0
        self.bias = torch.zeros(bias_cap, device=device)
        self.bias_events = torch.zeros(bias_cap, device=device)
        # The bias a first-sight entity starts from, learnt from first-sight events (new
        # items may be likelier or less likely to be liked than the average one).
        prior = 1 if cfg.entity_bias else 0
        self.bias_prior = torch.zeros(prior, device=device)
        self.bias_prior_g2 = torch.zeros(prior, device=device)
        self.counts = torch.zeros(max(rows, 1), dtype=torch.int64, device=device)
        self.inter = torch.zeros_like(self.counts)  # events per cluster in this split window
        self.m = min(cfg.initial_clusters, budget) if clustered else 0  # live clusters
        self.known = 0
        self.newest = -1  # newest split child, a reassignment candidate
        self.target = 0  # cluster whose members' gradients are being accumulated
        # GPCA accumulator: only members of ``target`` touched in the current window.
        self.acc_slot = torch.full((cap,), -1, dtype=torch.int32, device=device)
        self.acc_ids = torch.zeros(256, dtype=torch.int64, device=device)
        self.acc_grad = torch.zeros(256, width, device=device)
        self.acc_n = 0
        # Ring buffers of the last R interactions for at most S entities.
        s, r = cfg.state_capacity, cfg.history
        self.slot_of = torch.full((cap,), -1, dtype=torch.int32, device=device)
        self.owner = torch.full((s,), -1, dtype=torch.int64, device=device)
        self.hist_partner = torch.zeros(s, r, dtype=torch.int64, device=device)
        self.hist_label = torch.zeros(s, r, device=device)
        self.hist_count = torch.zeros(s, dtype=torch.int64, device=device)
        self.last_touch = torch.full((s,), -1, dtype=torch.int64, device=device)
        self.used = 0
        # LRU touch log: (slot, time) appended on touch; an entry is live while
        # last_touch[slot] == time, so the oldest live entry is the least recently touched.
        log = 2 * s + 4096
        self.log_slot = torch.zeros(log, dtype=torch.int64, device=device)
        self.log_time = torch.zeros(log, dtype=torch.int64, device=device)
        self.head = 0
        self.tail = 0

    # The ``cel.clusters.ClusterTable`` view of this side (the names the checkpoint keeps).
    @property
    def weight(self) -> torch.Tensor:
        return self.table

    @property
    def assignment(self) -> torch.Tensor:
        return self.assign

    @property
    def num_active(self) -> int:
        return self.m

    @num_active.setter
    def num_active(self, value: int) -> None:
        self.m = value

    SCALARS = ("m", "known", "newest", "target", "acc_n", "used", "head", "tail")
    TENSORS = ("table", "table_g2", "assign", "bias", "bias_events", "bias_prior", "bias_prior_g2",
               "counts", "inter", "acc_slot", "acc_ids", "acc_grad", "slot_of", "owner",
               "hist_partner", "hist_label", "hist_count", "last_touch", "log_slot", "log_time")

    @property
    def capacity(self) -> int:
        return self.assign.numel()

    def default_cluster(self) -> int:
        # Cold start: the cluster with most members (O(M), M bounded), never blindly 0.
        return int(torch.argmax(self.counts[: self.m]))

    def grow(self, needed: int, cfg: OnlineCELConfig, gen: torch.Generator) -> None:
        cap = self.capacity
        if needed <= cap:
            return
        new_cap = cap
        while new_cap < needed:
            new_cap *= 2

        def extend(t: torch.Tensor, fill: int) -> torch.Tensor:
            out = torch.full((new_cap,), fill, dtype=t.dtype, device=t.device)
            out[:cap] = t
            return out

        self.assign = extend(self.assign, -1)
        if self.bias.numel():
            self.bias = extend(self.bias, 0)
            self.bias_events = extend(self.bias_events, 0)
        self.slot_of = extend(self.slot_of, -1)
        self.acc_slot = extend(self.acc_slot, -1)
        if not self.clustered:
            table = torch.zeros(new_cap, self.table.shape[1], device=self.device)
            table[:cap] = self.table
            table[cap:, :-1].normal_(0.0, cfg.init_std, generator=gen)
            self.table = table
            if self.table_g2.numel():
                g2 = torch.zeros_like(table)
                g2[:cap] = self.table_g2
                self.table_g2 = g2
            self.counts = extend(self.counts, 0)
            self.inter = extend(self.inter, 0)


class OnlineCEL:
    """Online CEL over dense internal ids (see :class:`cel.idmap.IdMap`)."""

    def __init__(self, config: OnlineCELConfig | None = None,
                 device: str | torch.device = "auto",
                 interaction: nn.Module | None = None) -> None:
        self.config = cfg = config or OnlineCELConfig()
        self.device = resolve_device(device)
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.sides = {
            "user": _Side("user", cfg.cluster_users, cfg.user_clusters, cfg, self.device,
                          self.gen),
            "item": _Side("item", cfg.cluster_items, cfg.item_clusters, cfg, self.device,
                          self.gen),
        }
        self.model = (interaction or MFInteraction()).to(self.device)
        self.model_lr = cfg.lr if cfg.model_lr is None else cfg.model_lr
        self.batches = 0  # steps applied; also the LRU clock
        self.window_events = 0  # events learnt since the last split window ended
        self._scores: torch.Tensor | None = None  # per-step cluster x cluster score table
        self.totals = {"events": 0, "skipped": 0, "reassigned": 0, "splits": 0}
        # Sum of the labels learnt: a vote counts interactions above the mean label as
        # positive (a click, or a rating above the average one).
        self.label_sum = 0.0

    # ------------------------------------------------------------------ helpers
    def _loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "logloss":
            return F.binary_cross_entropy_with_logits(scores, labels, reduction="none")
        return (scores - labels).square()

    def _first_sight(self, side: _Side, uniq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows of the sorted unique ids, choosing (not yet writing) those of new ids.

        Returns ``(rows, new_mask)``; :meth:`_admit` writes them once the step is accepted,
        so a rejected batch leaves no assignment behind."""
        side.grow(int(uniq[-1]) + 1, self.config, self.gen)
        rows = side.assign[uniq].long()
        new = rows < 0
        k = int(new.sum())
        if k:
            if not side.clustered:
                rows[new] = uniq[new]
            elif bool((side.counts[: side.m] == 0).any()):
                # Only while some live cluster is empty (the random initial ones): spread new
                # ids over the live clusters, which seeds every cluster with members.
                rows[new] = torch.randint(0, side.m, (k,), device=self.device,
                                          generator=self.gen)
            else:
                rows[new] = side.default_cluster()
        return rows, new

    def _admit(self, side: _Side, uniq: torch.Tensor, rows: torch.Tensor,
               new: torch.Tensor) -> torch.Tensor:
        """Write the first-sight assignments chosen by :meth:`_first_sight`; the new ids."""
        ids, dest = uniq[new], rows[new]
        if ids.numel():
            side.assign[ids] = dest.to(torch.int32)
            if side.bias.numel():
                side.bias[ids] = side.bias_prior
            side.counts.index_add_(0, dest, torch.ones_like(dest))
            side.known += ids.numel()
        return ids

    def register(self, side: str, ids: torch.Tensor,
                 clusters: torch.Tensor | None = None) -> int:
        """Make ids known without events (bulk load, benchmarks); O(len(ids)).

        ``clusters`` (live cluster ids, clustered side only) replaces the cold-start default.
        Returns how many ids were new."""
        s = self.sides[side]
        ids = ids.to(self.device, torch.long).reshape(-1)
        if ids.numel() == 0:
            return 0
        s.grow(int(ids.max()) + 1, self.config, self.gen)
        fresh = s.assign[ids] < 0
        if clusters is None or not s.clustered:
            new = torch.unique(ids[fresh])
            if new.numel():
                self._admit(s, new, *self._first_sight(s, new))
            return int(new.numel())
        clusters = clusters.to(self.device, torch.long).reshape(-1)
        if clusters.shape != ids.shape or int(clusters.max()) >= s.m or int(clusters.min()) < 0:
            raise ValueError("clusters must match ids and name live clusters")
        ids, clusters = ids[fresh], clusters[fresh]
        ids, inv = torch.unique(ids, return_inverse=True)  # a repeated id counts once
        clusters = torch.zeros_like(ids).scatter_(0, inv, clusters)
        s.assign[ids] = clusters.to(torch.int32)
        if s.bias.numel():
            s.bias[ids] = s.bias_prior
        s.counts.index_add_(0, clusters, torch.ones_like(clusters))
        s.known += ids.numel()
        return int(ids.numel())

    # ------------------------------------------------------------------ state (LRU)
    def _log_append(self, s: _Side, slots: torch.Tensor, now: int) -> None:
        n = slots.numel()
        if s.tail + n > s.log_slot.numel():
            # Compact: keep the live entries (<= one per slot), in time order.
            ls, lt = s.log_slot[s.head: s.tail], s.log_time[s.head: s.tail]
            live = s.last_touch[ls] == lt
            ls, lt = ls[live], lt[live]
            k = ls.numel()
            if k + n > s.log_slot.numel():
                size = 2 * (k + n)
                s.log_slot = torch.zeros(size, dtype=torch.int64, device=self.device)
                s.log_time = torch.zeros(size, dtype=torch.int64, device=self.device)
            s.log_slot[:k] = ls
            s.log_time[:k] = lt
            s.head, s.tail = 0, k
        s.log_slot[s.tail: s.tail + n] = slots
        s.log_time[s.tail: s.tail + n] = now
        s.tail += n

    def _evict(self, s: _Side, k: int) -> torch.Tensor:
        """Up to ``k`` least recently touched slots, detached from their owners."""
        taken: list[torch.Tensor] = []
        while k > 0 and s.head < s.tail:
            end = min(s.tail, s.head + max(2 * k, 256))
            ls, lt = s.log_slot[s.head: end], s.log_time[s.head: end]
            pos = torch.nonzero(s.last_touch[ls] == lt).squeeze(1)
            if pos.numel() > k:
                pos = pos[:k]
                s.head += int(pos[-1]) + 1
            else:
                s.head = end
            if pos.numel():
                taken.append(ls[pos])
                k -= pos.numel()
        if not taken:
            return torch.zeros(0, dtype=torch.int64, device=self.device)
        slots = torch.cat(taken)
        s.slot_of[s.owner[slots]] = -1
        return slots

    def _touch(self, s: _Side, ents: torch.Tensor) -> torch.Tensor:
        """Slots of the (unique) entities, allocating/evicting as needed; -1 if none left."""
        now = self.batches
        slots = s.slot_of[ents].long()
        have = slots >= 0
        s.last_touch[slots[have]] = now  # their older log entries die
        need = torch.nonzero(~have).squeeze(1)
        k = need.numel()
        if k:
            free = min(k, s.owner.numel() - s.used)
            fresh = torch.arange(s.used, s.used + free, device=self.device)
            s.used += free
            if k > free:
                fresh = torch.cat([fresh, self._evict(s, k - free)])
            need = need[: fresh.numel()]  # a batch wider than the capacity keeps the rest
            e = ents[need]
            slots[need] = fresh
            s.slot_of[e] = fresh.to(torch.int32)
            s.owner[fresh] = e
            s.hist_count[fresh] = 0
            s.last_touch[fresh] = now
        self._log_append(s, slots[slots >= 0], now)
        return slots

    def _record(self, s: _Side, slots: torch.Tensor, partners: torch.Tensor,
                labels: torch.Tensor) -> None:
        """Write each event into its entity's ring buffer (the last R per entity win)."""
        keep = slots >= 0
        slots, partners, labels = slots[keep], partners[keep], labels[keep]
        if slots.numel() == 0:
            return
        r = self.config.history
        order, rank, size, uniq, counts = _group_rank(slots)
        slots, partners, labels = slots[order], partners[order], labels[order]
        last = rank >= size - r
        pos = (s.hist_count[slots] + rank) % r
        s.hist_partner[slots[last], pos[last]] = partners[last]
        s.hist_label[slots[last], pos[last]] = labels[last]
        s.hist_count.index_add_(0, uniq, counts)

    # ------------------------------------------------------------------ training
    def _apply(self, s: _Side, rows: torch.Tensor, grad: torch.Tensor) -> None:
        # Per-cluster averaging: each row moves by the MEAN gradient of its events in this
        # batch. Dividing by the total member count (the full-batch reference) would freeze
        # big clusters in a stream, where only a few members appear per batch; the raw sum
        # would make popular clusters take huge steps. The mean keeps steps O(lr) for all.
        uniq, inv = torch.unique(rows, return_inverse=True)
        g = torch.zeros(uniq.numel(), grad.shape[1], device=self.device)
        g.index_add_(0, inv, grad)
        w = s.table[uniq]
        if s.table_g2.numel():
            s.table[uniq] = _adagrad(w, s.table_g2, uniq, g + self.config.l2 * w,
                                     self.config.lr)
            return
        n = torch.bincount(inv, minlength=uniq.numel()).to(g.dtype).unsqueeze(1)
        s.table[uniq] = w - self.config.lr * (g / n + self.config.l2 * w)

    def _apply_bias(self, s: _Side, uniq: torch.Tensor, inv: torch.Tensor,
                    dscore: torch.Tensor) -> None:
        """A Newton step on each entity's summed gradient (its events in the batch), under
        the loss's curvature bound, with the precision of all its events so far."""
        g = torch.zeros(uniq.numel(), device=self.device).index_add_(0, inv, dscore)
        seen = s.bias_events[uniq] + torch.bincount(inv, minlength=uniq.numel())
        s.bias_events[uniq] = seen
        bound = 0.25 if self.config.loss == "logloss" else 2.0
        s.bias[uniq] -= g / (bound * (self.config.bias_prior_events + seen))

    def _apply_prior(self, s: _Side, dscore: torch.Tensor) -> None:
        """Adagrad on the first-sight bias from the first-sight events' gradients."""
        at = torch.zeros(1, dtype=torch.long, device=self.device)
        s.bias_prior[:] = _adagrad(s.bias_prior, s.bias_prior_g2, at, dscore.sum().reshape(1),
                                   self.config.bias_lr)

    def _accumulate(self, s: _Side, ids: torch.Tensor, rows: torch.Tensor,
                    grad: torch.Tensor) -> None:
        """Per-member gradient sums, for members of the split target only."""
        if not s.clustered or s.m >= s.max_clusters:
            return
        sel = torch.nonzero(rows == s.target).squeeze(1)
        if sel.numel() == 0:
            return
        uq, inv = torch.unique(ids[sel], return_inverse=True)
        g = torch.zeros(uq.numel(), grad.shape[1], device=self.device)
        g.index_add_(0, inv, grad[sel])
        slot = s.acc_slot[uq].long()
        new = torch.nonzero(slot < 0).squeeze(1)
        k = new.numel()
        if s.acc_n + k > s.acc_ids.numel():
            size = max(2 * s.acc_ids.numel(), s.acc_n + k)
            ids_new = torch.zeros(size, dtype=torch.int64, device=self.device)
            grad_new = torch.zeros(size, grad.shape[1], device=self.device)
            ids_new[: s.acc_n] = s.acc_ids[: s.acc_n]
            grad_new[: s.acc_n] = s.acc_grad[: s.acc_n]
            s.acc_ids, s.acc_grad = ids_new, grad_new
        fresh = torch.arange(s.acc_n, s.acc_n + k, device=self.device)
        slot[new] = fresh
        s.acc_slot[uq[new]] = fresh.to(torch.int32)
        s.acc_ids[fresh] = uq[new]
        s.acc_grad[fresh] = 0.0
        s.acc_n += k
        s.acc_grad.index_add_(0, slot, g)

    def _split(self, s: _Side) -> list[tuple[int, int, torch.Tensor]]:
        """End of a split window: GPCA-split the target, then pick the next target."""
        events: list[tuple[int, int, torch.Tensor]] = []
        if not s.clustered:
            return events
        n, cfg = s.acc_n, self.config
        if s.m < s.max_clusters and n >= cfg.split_min_members:
            done = split_cluster(s, s.target, s.acc_ids[:n], s.acc_grad[:n],
                                 [s.table_g2] if s.table_g2.numel() else [],
                                 cfg.split_min_members)
            if done is not None:
                s.newest = done.child
                events.append((done.parent, done.child, done.moved))
        s.acc_slot[s.acc_ids[:n]] = -1
        s.acc_n = 0
        # Next target: most interactions in the window just ended, among splittable ones.
        inter = s.inter[: s.m].clone()
        inter[s.counts[: s.m] < 2 * cfg.split_min_members] = -1
        s.target = int(torch.argmax(inter))
        s.inter.zero_()
        return events

    def _cluster_scores(self, s: _Side, o: _Side) -> torch.Tensor:
        """Model score of every (live ``s`` cluster, live ``o`` cluster) pair: (m_s, m_o).

        With both sides clustered (and no context), a score depends only on the two clusters,
        so one O(M_u·M_i) table per step (bounded by the budgets, not by N or the batch)
        turns the exact history loss of every candidate into gathers, for any model."""
        if self._scores is None:
            su, si = self.sides["user"], self.sides["item"]
            wu, wi = su.table[: su.m].unsqueeze(0), si.table[: si.m].unsqueeze(0)
            self._scores = pairwise_scores(self.model, wu, wi)[0]
        return self._scores if s.name == "user" else self._scores.T.contiguous()

    def _candidates(self, s: _Side, o: _Side, cur: torch.Tensor, partners: torch.Tensor,
                    labels: torch.Tensor, valid: torch.Tensor, prow: torch.Tensor,
                    pvec: torch.Tensor | None, table: torch.Tensor | None) -> torch.Tensor:
        """(E, C) candidate clusters: current, newest split child, the best clusters for the
        entity's recent partners, clusters of co-engaged entities (two hops), random ones."""
        e, r = partners.shape
        dev, gen = self.device, self.gen
        rest = self.config.candidates - 2
        n_best = rest // 3 + (rest % 3 > 0)
        n_cohort = rest // 3 + (rest % 3 > 1)
        n_rand = rest - n_best - n_cohort
        if table is None and not hasattr(self.model, "pairwise"):
            # Scoring E x picks partners against all M clusters needs (E, picks, M) model
            # calls without a fast pairwise: follow partners by two hops instead.
            n_best, n_cohort = 0, n_cohort + n_best
        newest = torch.full_like(cur, s.newest) if s.newest >= 0 else cur
        # Which history entries to follow: prefer positive ones (those carry the taste).
        weight = valid.float() * (1.0 + 3.0 * (labels > 0).float())
        cols = [cur.unsqueeze(1), newest.unsqueeze(1)]
        if n_best:
            pick = torch.multinomial(weight, n_best, replacement=True, generator=gen)
            if table is not None:  # best s-cluster per o-cluster: argmax of the score table
                cols.append(table.argmax(0)[prow.gather(1, pick)])
            else:  # partners have own rows: score them against the live clusters directly
                assert pvec is not None
                pv = pvec.gather(1, pick.unsqueeze(2).expand(-1, -1, pvec.shape[2]))
                ws = s.table[: s.m].unsqueeze(0).expand(e, -1, -1)
                sc = (pairwise_scores(self.model, ws, pv) if s.name == "user"
                      else pairwise_scores(self.model, pv, ws).transpose(1, 2))
                cols.append(sc.argmax(1))
        if n_cohort:
            # Two hops: the cluster of someone else who interacted with my partner.
            pick = torch.multinomial(weight, n_cohort, replacement=True, generator=gen)
            p = partners.gather(1, pick)
            ps = o.slot_of[p].long()
            has = ps >= 0
            psafe = ps.clamp(min=0)
            pn = o.hist_count[psafe].clamp(max=r)
            has &= pn > 0
            k = (torch.rand(p.shape, device=dev, generator=gen) * pn).long().clamp(max=r - 1)
            q = o.hist_partner[psafe, k]
            cq = s.assign[q].long()
            has &= cq >= 0
            rnd = torch.randint(0, s.m, p.shape, device=dev, generator=gen)
            cols.append(torch.where(has, cq, rnd))
        if n_rand:
            cols.append(torch.randint(0, s.m, (e, n_rand), device=dev, generator=gen))
        return torch.cat(cols, dim=1)

    def _vote(self, s: _Side, o: _Side, ents: torch.Tensor,
              slots: torch.Tensor) -> torch.Tensor:
        """Co-click votes (``OnlineCELConfig.votes``): per entity (with a slot) the cluster
        it is proposed to move to, -1 for none. O(E x R x ``vote_window``) gathers, no model
        call."""
        r, k = self.config.history, min(self.config.vote_window, self.config.history)
        span = torch.arange(r, device=self.device)
        nvalid = s.hist_count[slots].clamp(max=r)
        partners = s.hist_partner[slots]  # (E, R)
        liked = self.label_sum / max(self.totals["events"], 1)
        pos = (span < nvalid.unsqueeze(1)) & (s.hist_label[slots] > liked)
        pslot = o.slot_of[partners].long()
        pos &= pslot >= 0
        pslot = pslot.clamp(min=0)
        # The partners' latest k entries (ring positions count-1, count-2, ...), keeping the
        # positive same-side entities: (E, R, k).
        count = o.hist_count[pslot]
        if k == r:  # whole rows: a plain row gather
            second, labels2 = o.hist_partner[pslot], o.hist_label[pslot]
        else:
            back = (count.unsqueeze(2) - 1 - span[:k]) % r
            second = o.hist_partner[pslot.unsqueeze(2), back]
            labels2 = o.hist_label[pslot.unsqueeze(2), back]
        pos2 = (span[:k] < count.clamp(max=r).unsqueeze(2)) & pos.unsqueeze(2)
        pos2 &= labels2 > liked
        pos2 &= second != ents.view(-1, 1, 1)
        rows = s.assign[second].long()
        pos2 &= rows >= 0
        votes = torch.zeros(ents.numel(), s.m, device=self.device)
        votes.scatter_add_(1, rows.clamp(min=0).reshape(ents.numel(), -1),
                           pos2.reshape(ents.numel(), -1).float())
        return vote_moves(votes, s.counts, s.assign[ents].long(), self.config.vote_ratio)

    def _reassign(self, s: _Side, o: _Side, ents: torch.Tensor,
                  slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move the batch's entities: co-click votes propose, the history loss judges.

        An entity with fewer than ``reassign_min_history`` interactions follows its vote (its
        loss says little); otherwise a vote is taken unless it raises the entity's mean
        history loss by more than ``vote_tolerance`` (votes find groups while the rows are
        still alike; once the rows differ the loss vetoes noisy votes), and with
        ``loss_reassign`` an entity without a vote moves to its loss-minimising candidate."""
        empty = torch.zeros(0, dtype=torch.int64, device=self.device)
        if not s.clustered or s.m < 2:
            return empty, empty
        cfg, r = self.config, self.config.history
        ok = slots >= 0
        ents, slots = ents[ok], slots[ok]
        if ents.numel() == 0:
            return empty, empty
        proposal = torch.full_like(ents, -1)
        if cfg.votes:
            # At most vote_entities voters a step (a random subset of a wider batch): the
            # gathers stay bounded whatever the micro-batch, and every entity votes again
            # the next time it is in a batch.
            voters = torch.arange(ents.numel(), device=self.device)
            if ents.numel() > cfg.vote_entities:
                voters = torch.randperm(ents.numel(), device=self.device,
                                        generator=self.gen)[: cfg.vote_entities]
            proposal[voters] = self._vote(s, o, ents[voters], slots[voters])
        free = torch.rand(ents.shape, device=self.device, generator=self.gen) >= cfg.damping
        proposal[~free] = -1
        nvalid = s.hist_count[slots].clamp(max=r)
        judged = nvalid >= cfg.reassign_min_history
        if not (cfg.loss_reassign or cfg.votes):
            judged[:] = False
        early = ~judged & (proposal >= 0)  # too little history to judge: follow the vote
        movers, new = ents[early], proposal[early]
        ents, slots, nvalid, proposal, free = (ents[judged], slots[judged], nvalid[judged],
                                               proposal[judged], free[judged])
        if ents.numel() == 0:
            if movers.numel() == 0:
                return empty, empty
            return move(s, movers, new)
        partners, labels = s.hist_partner[slots], s.hist_label[slots]
        valid = torch.arange(r, device=self.device).unsqueeze(0) < nvalid.unsqueeze(1)
        prow = o.assign[partners].long().clamp(min=0)
        cur = s.assign[ents].long()
        y = labels.unsqueeze(1)  # (E, 1, R)
        voted = proposal >= 0
        if o.clustered:
            table = self._cluster_scores(s, o)
            cands = self._candidates(s, o, cur, partners, labels, valid, prow, None, table)
            cands = torch.cat([cands, torch.where(voted, proposal, cur).unsqueeze(1)], 1)
            scores = table.reshape(-1)[cands.unsqueeze(2) * o.m + prow.unsqueeze(1)]
        else:
            pvec = o.table[prow]
            cands = self._candidates(s, o, cur, partners, labels, valid, prow, pvec, None)
            cands = torch.cat([cands, torch.where(voted, proposal, cur).unsqueeze(1)], 1)
            cvec = s.table[cands]
            scores = (pairwise_scores(self.model, cvec, pvec) if s.name == "user"
                      else pairwise_scores(self.model, pvec, cvec).transpose(1, 2))
        if cfg.entity_bias:  # the biases do not depend on the cluster, but the loss does
            scores = scores + (s.bias[ents].view(-1, 1, 1) + o.bias[partners].unsqueeze(1))
        # Exact loss, written so that it broadcasts over (E, C, R) without expanding labels.
        if cfg.loss == "logloss":
            per = F.softplus(scores) - y * scores
        else:
            per = (scores - y).square()
        loss = (per * valid.unsqueeze(1)).sum(2) / nvalid.unsqueeze(1)
        take_vote = voted & (loss[:, -1] <= loss[:, 0] + cfg.vote_tolerance)
        dest = cur
        if cfg.loss_reassign:  # without a vote: the best candidate when clearly better
            dest, _ = loss_moves(loss[:, :-1], cands[:, :-1], cur, loss[:, 0], free & ~voted,
                                 cfg.margin)
        dest = torch.where(take_vote, proposal, dest)
        go = dest != cur
        movers, new = torch.cat([movers, ents[go]]), torch.cat([new, dest[go]])
        if movers.numel() == 0:
            return empty, empty
        return move(s, movers, new)

    def step(self, users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor,
             context: torch.Tensor | None = None, return_changes: bool = False
             ) -> StepResult:
        """One online update on a micro-batch of events (dense internal ids); what it did.
        ``return_changes`` also fills :attr:`StepResult.changes` and ``split_events``."""
        dev = self.device
        users = users.to(dev, torch.long).reshape(-1)
        items = items.to(dev, torch.long).reshape(-1)
        labels = labels.to(dev, torch.float32).reshape(-1)
        if not users.shape == items.shape == labels.shape:
            raise ValueError("users, items and labels must have the same length")
        n = users.numel()
        out = StepResult(events=n)
        if n and (int(users.min()) < 0 or int(items.min()) < 0):
            raise ValueError("internal ids must be non-negative")
        if n == 0 or not bool(torch.isfinite(labels).all()):
            out.skipped = n > 0
            self.totals["skipped"] += int(out.skipped)
            return self._finish(out)
        su, si = self.sides["user"], self.sides["item"]
        if self.batches == 0:
            self._start_global_bias(labels)
        uniq_u, inv_u = torch.unique(users, return_inverse=True)
        uniq_i, inv_i = torch.unique(items, return_inverse=True)
        first_u, new_mask_u = self._first_sight(su, uniq_u)
        first_i, new_mask_i = self._first_sight(si, uniq_i)
        rows_u, rows_i = first_u[inv_u], first_i[inv_i]
        u = su.table[rows_u].requires_grad_(True)
        i = si.table[rows_i].requires_grad_(True)
        self.model.zero_grad(set_to_none=True)
        scores = self.model(u, i) if context is None else self.model(u, i, context.to(dev))
        if self.config.entity_bias:
            fresh_u, fresh_i = new_mask_u[inv_u], new_mask_i[inv_i]
            scores = scores + torch.where(fresh_u, su.bias_prior, su.bias[users])
            scores = scores + torch.where(fresh_i, si.bias_prior, si.bias[items])
        scores.retain_grad()
        total = self._loss(scores, labels).sum()
        if not bool(torch.isfinite(total)):
            out.skipped = True
            self.totals["skipped"] += 1
            return self._finish(out)
        total.backward()
        grads = [u.grad, i.grad] + [p.grad for p in self.model.parameters()
                                    if p.grad is not None]
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            out.skipped = True
            self.totals["skipped"] += 1
            return self._finish(out)
        out.loss = float(total.detach()) / n
        new_u = self._admit(su, uniq_u, first_u, new_mask_u)
        new_i = self._admit(si, uniq_i, first_i, new_mask_i)
        out.new = {"user": new_u.numel(), "item": new_i.numel()}
        self.batches += 1
        self.totals["events"] += n
        self.label_sum += float(labels.sum())
        changes: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"user": [], "item": []}
        split_events: list = []
        with torch.no_grad():
            self._scores = None  # the rows are about to move
            gu, gi = u.grad, i.grad
            self._apply(su, rows_u, gu)
            self._apply(si, rows_i, gi)
            if self.config.entity_bias:
                for s, fresh, uniq, inv in ((su, fresh_u, uniq_u, inv_u),
                                            (si, fresh_i, uniq_i, inv_i)):
                    self._apply_bias(s, uniq, inv, scores.grad)
                    if bool(fresh.any()):
                        self._apply_prior(s, scores.grad[fresh])
            for p in self.model.parameters():
                if p.grad is not None:
                    p.add_(p.grad, alpha=-self.model_lr / n)
            for s, ids, rows, g in ((su, users, rows_u, gu), (si, items, rows_i, gi)):
                if s.clustered:
                    s.inter.index_add_(0, rows, torch.ones_like(rows))
                    self._accumulate(s, ids, rows, g)
            slots_u, slots_i = self._touch(su, uniq_u), self._touch(si, uniq_i)
            self._record(su, slots_u[inv_u], items, labels)
            self._record(si, slots_i[inv_i], users, labels)
            for s, o, ents, slots, new in ((su, si, uniq_u, slots_u, new_u),
                                           (si, su, uniq_i, slots_i, new_i)):
                movers, dest = self._reassign(s, o, ents, slots)
                out.reassigned[s.name] = movers.numel()
                self.totals["reassigned"] += movers.numel()
                if return_changes:
                    changes[s.name] += [(new, s.assign[new].long()), (movers, dest)]
            self.window_events += n
            window_ends = self.window_events >= self.config.split_window
            if window_ends:
                self.window_events = 0
            for s in (su, si):
                if window_ends:
                    for parent, child, moved in self._split(s):
                        out.splits[s.name] += 1
                        self.totals["splits"] += 1
                        split_events.append((s.name, parent, child, moved))
                        if return_changes:
                            changes[s.name].append((moved, torch.full_like(moved, child)))
        if return_changes:
            out.changes = {k: (torch.cat([a for a, _ in v]), torch.cat([b for _, b in v]))
                           for k, v in changes.items()}
            out.split_events = split_events
        return self._finish(out)

    @torch.no_grad()
    def _start_global_bias(self, labels: torch.Tensor) -> None:
        """Before the first step: the global bias starts at the first batch's mean label (its
        logit under log loss) instead of 0, so the first predictions are not off by the
        whole mean (3.5 stars, or a click rate far from one half)."""
        bias = getattr(self.model, "global_bias", None)
        if not isinstance(bias, torch.Tensor) or bias.numel() != 1:
            return
        mean = float(labels.mean())
        if self.config.loss == "logloss":
            mean = min(max(mean, 0.01), 0.99)
            mean = math.log(mean / (1.0 - mean))
        bias.fill_(mean)

    def _finish(self, out: StepResult) -> StepResult:
        for s in self.sides.values():
            out.clusters[s.name] = s.m if s.clustered else s.known
            out.known[s.name] = s.known
            out.state[s.name] = s.used
        return out

    # ------------------------------------------------------------------ serving
    def _lookup(self, s: _Side, ids: torch.Tensor) -> torch.Tensor:
        """Rows for arbitrary ids; unknown ones (-1, beyond capacity, unseen) cold-start."""
        ids = ids.to(self.device, torch.long).reshape(-1)
        inside = (ids >= 0) & (ids < s.capacity)
        rows = s.assign[ids.clamp(0, s.capacity - 1)].long()
        known = inside & (rows >= 0)
        if s.clustered:
            return s.table[torch.where(known, rows, s.default_cluster())]
        vec = s.table[rows.clamp(min=0)]
        return vec * known.unsqueeze(1)  # per-entity side: unknown = zero vector and bias

    @torch.no_grad()
    def predict(self, users: torch.Tensor, items: torch.Tensor,
                context: torch.Tensor | None = None, raw: bool = False) -> torch.Tensor:
        """Click probability (logloss) or predicted value (mse) per (user, item) pair;
        ``raw``: the score before the link (the logit under logloss)."""
        u, i = self._lookup(self.sides["user"], users), self._lookup(self.sides["item"], items)
        scores = self.model(u, i) if context is None else self.model(u, i, context.to(u.device))
        if self.config.entity_bias:
            scores = scores + self.entity_bias("user", users) + self.entity_bias("item", items)
        return torch.sigmoid(scores) if self.config.loss == "logloss" and not raw else scores

    @torch.no_grad()
    def score_matrix(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """``(len(users), len(items))`` raw scores, as :meth:`predict` with ``raw``: every
        user against every item's ROW once (O(users x rows x dim)), then gathered per item,
        instead of once per pair."""
        users = users.to(self.device, torch.long).reshape(-1)
        items = items.to(self.device, torch.long).reshape(-1)
        si = self.sides["item"]
        if not si.clustered:  # one row per item: nothing to share
            return self.predict(users.repeat_interleave(items.numel()),
                                items.repeat(users.numel()), raw=True
                                ).reshape(users.numel(), items.numel())
        u = self._lookup(self.sides["user"], users)
        by_row = pairwise_scores(self.model, u.unsqueeze(0), si.table[: si.m].unsqueeze(0))[0]
        inside = (items >= 0) & (items < si.capacity)
        rows = si.assign[items.clamp(0, si.capacity - 1)].long()
        rows = torch.where(inside & (rows >= 0), rows, si.default_cluster())
        scores = by_row[:, rows]
        if self.config.entity_bias:
            scores = (scores + self.entity_bias("user", users).unsqueeze(1)
                      + self.entity_bias("item", items).unsqueeze(0))
        return scores

    @torch.no_grad()
    def recent_partners(self, side: str, ids: torch.Tensor) -> torch.Tensor:
        """``(len(ids), history)``: the partners of each id's latest interactions, from its
        ring buffer (-1 where there are fewer, or the id holds no buffer)."""
        s = self.sides[side]
        r = self.config.history
        ids = ids.to(self.device, torch.long).reshape(-1)
        out = torch.full((ids.numel(), r), -1, dtype=torch.long, device=self.device)
        inside = (ids >= 0) & (ids < s.capacity)
        slots = torch.where(inside, s.slot_of[ids.clamp(0, s.capacity - 1)].long(), -1)
        have = slots >= 0
        if bool(have.any()):
            held = slots[have]
            valid = torch.arange(r, device=self.device) < s.hist_count[held].clamp(max=r)[:, None]
            out[have] = torch.where(valid, s.hist_partner[held].long(), -1)
        return out

    def entity_bias(self, side: str, ids: torch.Tensor) -> torch.Tensor:
        """Own bias per id (the first-sight prior for unknown ids; 0 without
        ``entity_bias``)."""
        s = self.sides[side]
        ids = ids.to(self.device, torch.long).reshape(-1)
        if not s.bias.numel():
            return torch.zeros(ids.shape, device=self.device)
        inside = (ids >= 0) & (ids < s.bias.numel())
        safe = ids.clamp(0, s.bias.numel() - 1)
        known = inside & (s.assign[safe] >= 0)
        return torch.where(known, s.bias[safe], s.bias_prior)

    def clusters_of(self, side: str, ids: torch.Tensor) -> torch.Tensor:
        """Assigned cluster per id (-1 for unknown ids)."""
        s = self.sides[side]
        ids = ids.to(self.device, torch.long).reshape(-1)
        inside = (ids >= 0) & (ids < s.capacity)
        rows = s.assign[ids.clamp(0, s.capacity - 1)].long()
        return torch.where(inside, rows, -1)

    def cluster_sizes(self, side: str) -> torch.Tensor:
        s = self.sides[side]
        return s.counts[: s.m].clone() if s.clustered else s.counts[: s.known].clone()

    def cluster_table(self, side: str) -> torch.Tensor:
        """Live rows ``(m, dim + 1)`` (last column: bias) for publishing."""
        s = self.sides[side]
        return s.table[: s.m] if s.clustered else s.table[: s.known]

    def memory_bytes(self) -> int:
        total = sum(p.numel() * p.element_size() for p in self.model.parameters())
        for s in self.sides.values():
            total += sum(getattr(s, k).numel() * getattr(s, k).element_size()
                         for k in _Side.TENSORS)
        return total

    def state_dict(self) -> dict[str, torch.Tensor]:
        state: dict[str, torch.Tensor] = {}
        for name, s in self.sides.items():
            for k in _Side.TENSORS:
                state[f"{name}.{k}"] = getattr(s, k).clone()
            for k in _Side.SCALARS:
                state[f"{name}.{k}"] = torch.tensor(getattr(s, k), dtype=torch.int64)
        for k, v in self.model.state_dict().items():
            state[f"model.{k}"] = v.clone()
        state["batches"] = torch.tensor(self.batches, dtype=torch.int64)
        state["window_events"] = torch.tensor(self.window_events, dtype=torch.int64)
        state["label_sum"] = torch.tensor(self.label_sum, dtype=torch.float64)
        for k, v in self.totals.items():
            state[f"totals.{k}"] = torch.tensor(v, dtype=torch.int64)
        state["rng"] = self.gen.get_state()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, s in self.sides.items():
            expected = s.table.shape[1]
            if state[f"{name}.table"].shape[1] != expected:
                raise ValueError(f"{name} table width differs from config dim + 1")
            for k in _Side.TENSORS:
                if k == "bias_events" and f"{name}.{k}" not in state:
                    # a checkpoint of the Adagrad biases: their values carry over, and they
                    # adapt as new entities' do until their events accumulate again
                    state[f"{name}.{k}"] = torch.zeros_like(state[f"{name}.bias"])
                setattr(s, k, state[f"{name}.{k}"].to(self.device).clone())
            for k in _Side.SCALARS:
                setattr(s, k, int(state[f"{name}.{k}"]))
        self.model.load_state_dict({k[len("model."):]: v for k, v in state.items()
                                    if k.startswith("model.")})
        self.batches = int(state["batches"])
        # a checkpoint from before event-counted windows: the window starts afresh
        self.window_events = int(state["window_events"]) if "window_events" in state else 0
        self.label_sum = float(state["label_sum"]) if "label_sum" in state else 0.0
        self.totals = {k: int(state[f"totals.{k}"]) for k in self.totals}
        try:
            self.gen.set_state(state["rng"])
        except RuntimeError:  # checkpoint from another device type: keep this generator
            pass


__all__ = ["MFInteraction", "OnlineCEL", "OnlineCELConfig", "SIDES", "StepResult",
           "pairwise_scores", "resolve_device"]
