"""Co-liked items: per item, the items most often liked by the same user close to it.

For every positive ``(user, item)`` the item is paired with the user's previous ``window``
positives (both directions), and each item keeps its ``neighbours`` strongest partners in a
fixed-size row (Space-Saving: a partner not in a full row replaces the weakest one and starts
from its count, so an item's frequent partners are never lost). Memory is
``items x neighbours`` pairs plus ``users x window`` recent positives; the cost of a batch
grows with its positives times ``window``, not with the catalogue.

Recommendations add ``weight x log(1 + co)`` to an item's key (the weight chosen online, as the
model's in ``cel.retrieval``), where ``co`` sums the item's
counts in the rows of the user's recent positives, each divided by the square root of the
item's positives (so that popular items do not win on co-occurrence alone): the item-to-item
neighbourhood of the user's latest taste, next to popularity and the model's score.
"""

from __future__ import annotations

import numpy as np

from cel.arrays import grown

NEIGHBOURS = 32  # partners kept per item
WINDOW = 16  # a positive is paired with this many of the user's previous positives
# Weight of log(1 + co) in the recommendation key: the trainer starts from WEIGHT (off) and
# leaves it for another of WEIGHTS only on evidence (cel.retrieval.WeightChooser), per stream;
# starting from 2 instead lost or tied on every tuning cut (docs/models.md).
WEIGHTS = (0.0, 1.0, 2.0, 4.0)
WEIGHT = 0.0


class Covisitation:
    """Co-liked counts over internal item and user ids (0, 1, 2, ...)."""

    def __init__(self, neighbours: int = NEIGHBOURS, window: int = WINDOW) -> None:
        if neighbours < 1 or window < 1:
            raise ValueError("neighbours and window must be positive")
        self.k, self.r = neighbours, window
        self.ids = np.full((0, neighbours), -1, np.int32)  # partner per slot, -1: free
        self.counts = np.zeros((0, neighbours), np.float32)
        self.recent = np.full((0, window), -1, np.int32)  # per user, ring of positives
        self.filled = np.zeros(0, np.int64)  # positives written per user (ring position)
        self._changed: list[np.ndarray] = []

    # ------------------------------------------------------------------ learning
    def learn(self, users: np.ndarray, items: np.ndarray) -> None:
        """Positive events ``(users[k], items[k])`` in the order they happened."""
        users = np.asarray(users, np.int64).reshape(-1)
        items = np.asarray(items, np.int64).reshape(-1)
        if not len(users):
            return
        self.recent = grown(self.recent, int(users.max()) + 1, -1)
        self.filled = grown(self.filled, int(users.max()) + 1, 0)
        order = np.argsort(users, kind="stable")  # each user's positives stay in order
        u, it = users[order], items[order]
        start = np.r_[True, u[1:] != u[:-1]]
        first = np.maximum.accumulate(np.where(start, np.arange(len(u)), 0))
        rank = np.arange(len(u)) - first  # place among the user's positives in this batch
        left, right = [], []
        for d in range(1, self.r + 1):
            inside = rank >= d  # partner: the user's positive d places earlier in the batch
            k = np.flatnonzero(inside)
            left.append(it[k - d])
            right.append(it[k])
            back = np.flatnonzero(~inside)  # partner: from the ring, (d - rank) back
            age = d - rank[back]
            slot = (self.filled[u[back]] - age) % self.r
            ok = self.filled[u[back]] >= age
            partner = self.recent[u[back][ok], slot[ok]]
            left.append(partner.astype(np.int64))
            right.append(it[back][ok])
        a, b = np.concatenate(left), np.concatenate(right)
        keep = a != b
        self._add_pairs(np.concatenate([a[keep], b[keep]]), np.concatenate([b[keep], a[keep]]))
        # the ring: each user's positives of this batch, in order (the last window of them)
        group = np.cumsum(start) - 1
        per_user = np.bincount(group)
        count = per_user[group]
        last = rank >= count - self.r
        where = (self.filled[u[last]] + rank[last]) % self.r
        self.recent[u[last], where] = it[last]
        np.add.at(self.filled, u[start], per_user)

    def _add_pairs(self, a: np.ndarray, b: np.ndarray) -> None:
        if not len(a):
            return
        top = int(max(a.max(), b.max())) + 1
        self.ids = grown(self.ids, top, -1)
        self.counts = grown(self.counts, top, 0.0)
        key, c = np.unique(a * top + b, return_counts=True)
        a, b, c = key // top, key % top, c.astype(np.float32)
        self._changed.append(np.unique(a))
        match = self.ids[a] == b[:, None]
        found = match.any(axis=1)
        self.counts[a[found], match[found].argmax(axis=1)] += c[found]
        a, b, c = a[~found], b[~found], c[~found]
        order = np.lexsort((-c, a))  # per row, the strongest new partner first
        a, b, c = a[order], b[order], c[order]
        while len(a):  # one insertion per row and round: rows never collide
            _, head = np.unique(a, return_index=True)
            rows, slot = a[head], self.counts[a[head]].argmin(axis=1)
            take = c[head] >= self.counts[rows, slot]  # never over a stronger partner
            self.ids[rows[take], slot[take]] = b[head][take]
            self.counts[rows[take], slot[take]] = c[head][take]
            rest = np.ones(len(a), bool)
            rest[head] = False
            a, b, c = a[rest], b[rest], c[rest]

    # ------------------------------------------------------------------ reading
    def recent_positives(self, user: int) -> np.ndarray:
        """The user's latest positives (internal item ids), newest first."""
        if user < 0 or user >= len(self.filled) or self.filled[user] == 0:
            return np.zeros(0, np.int64)
        n = int(min(self.filled[user], self.r))
        slots = (self.filled[user] - 1 - np.arange(n)) % self.r
        return self.recent[user, slots].astype(np.int64)

    def take_changed(self) -> np.ndarray:
        """Items whose row changed since the last call (sorted internal ids)."""
        changed = np.unique(np.concatenate(self._changed)) if self._changed else \
            np.zeros(0, np.int64)
        self._changed = []
        return changed.astype(np.int64)

    def rows(self, items: np.ndarray, known: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, counts)`` rows of ``items`` (free slots: id -1, count 0); rows of items
        beyond the learnt ones are empty. ``known``: how many items exist (the table grows
        lazily)."""
        items = np.asarray(items, np.int64)
        ids = np.full((len(items), self.k), -1, np.int32)
        counts = np.zeros((len(items), self.k), np.float32)
        inside = items < min(len(self.ids), known)
        ids[inside], counts[inside] = self.ids[items[inside]], self.counts[items[inside]]
        return ids, counts

    def state(self) -> dict[str, np.ndarray]:
        return {"ids": self.ids, "counts": self.counts, "recent": self.recent,
                "filled": self.filled}

    def load(self, state: dict[str, np.ndarray]) -> None:
        ids, counts = state["ids"].astype(np.int32), state["counts"].astype(np.float32)
        recent, filled = state["recent"].astype(np.int32), state["filled"].astype(np.int64)
        if ids.shape != counts.shape or ids.ndim != 2 or ids.shape[1] != self.k:
            raise ValueError(f"co-liked rows {ids.shape}, expected (items, {self.k})")
        if recent.ndim != 2 or recent.shape[1] != self.r or len(filled) != len(recent):
            raise ValueError(f"recent positives {recent.shape}, expected (users, {self.r})")
        self.ids, self.counts, self.recent, self.filled = ids, counts, recent, filled
        self._changed = []

    def nbytes(self) -> int:
        return self.ids.nbytes + self.counts.nbytes + self.recent.nbytes + self.filled.nbytes


def co_scores(anchor_ids: np.ndarray, anchor_counts: np.ndarray, positives: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """Items co-liked with the anchors and their ``co`` (see the module docstring).

    ``anchor_ids``/``anchor_counts``: the anchors' rows ``(anchors, neighbours)``;
    ``positives``: positives per item (indexed by item id)."""
    ids = anchor_ids.reshape(-1).astype(np.int64)
    counts = anchor_counts.reshape(-1).astype(np.float64)
    ok = (ids >= 0) & (ids < len(positives)) & (counts > 0)
    if not ok.any():
        return np.zeros(0, np.int64), np.zeros(0)
    items, inverse = np.unique(ids[ok], return_inverse=True)
    co = np.bincount(inverse, weights=counts[ok], minlength=len(items))
    return items, co / np.sqrt(np.maximum(positives[items].astype(np.float64), 1.0))
