"""Co-liked rows: how often items of one item row are liked close to items of another.

For every positive ``(user, item)`` the item is paired with the user's previous ``window``
positives, and the pair is counted between the two items' rows (clusters), both directions.
As CEL shares one embedding row among a cluster's items, the co-liked counts are shared too:
memory is ``rows x rows`` (256 x 256 floats for the default budget), whatever the catalogue,
plus ``window`` recent positives per user; the cost of a batch grows with its positives times
``window``. Counts stay with the rows an item had when the pair was seen; a new row (a split)
starts from none.

Recommendations add ``weight x log(1 + co)`` to every item of a row, where ``co`` sums the
row's counts against the rows of the user's latest positives, divided by the square root of
the positives counted in the row (so that big, popular rows do not win on co-occurrence
alone). The weight is chosen online, as the model's is in ``cel.retrieval``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cel.arrays import grown, grown_square

WINDOW = 16  # a positive is paired with this many of the user's previous positives
# Weight of log(1 + co) in the recommendation key: the trainer starts from WEIGHT (off) and
# leaves it for another of WEIGHTS only on evidence (cel.retrieval.WeightChooser), per stream.
# The start is sticky (leaving it needs proof), so it is the safe one: started at 2, the rows
# stayed on over the whole MovieLens likes stream and cost recall there (docs/models.md).
WEIGHTS = (0.0, 1.0, 2.0, 4.0)
WEIGHT = 0.0


class Covisitation:
    """Co-liked counts between item rows, over internal user and item ids (0, 1, 2, ...)."""

    def __init__(self, window: int = WINDOW) -> None:
        if window < 1:
            raise ValueError("window must be positive")
        self.r = window
        self.counts = np.zeros((0, 0), np.float32)  # (rows, rows), symmetric
        self.positives = np.zeros(0, np.float32)  # positives counted per row
        self.recent = np.full((0, window), -1, np.int32)  # per user, ring of positive items
        self.filled = np.zeros(0, np.int64)  # positives written per user (ring position)
        self._changed: list[np.ndarray] = []

    # ------------------------------------------------------------------ learning
    def learn(self, users: np.ndarray, items: np.ndarray,
              rows_of: Callable[[np.ndarray], np.ndarray]) -> None:
        """Positive events ``(users[k], items[k])`` in the order they happened; ``rows_of``
        maps item ids to their rows now (-1: none)."""
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
            left.append(self.recent[u[back][ok], slot[ok]].astype(np.int64))
            right.append(it[back][ok])
        a, b = np.concatenate(left), np.concatenate(right)
        keep = a != b
        a, b = a[keep], b[keep]
        rows = rows_of(np.concatenate([a, b, items]))  # one lookup
        self._add(rows[: len(a)], rows[len(a): 2 * len(a)], rows[2 * len(a):])
        # the ring: each user's positives of this batch, in order (the last window of them)
        group = np.cumsum(start) - 1
        per_user = np.bincount(group)
        last = rank >= per_user[group] - self.r
        where = (self.filled[u[last]] + rank[last]) % self.r
        self.recent[u[last], where] = it[last]
        np.add.at(self.filled, u[start], per_user)

    def _add(self, ra: np.ndarray, rb: np.ndarray, positive_rows: np.ndarray) -> None:
        ok = (ra >= 0) & (rb >= 0)
        ra, rb = ra[ok].astype(np.int64), rb[ok].astype(np.int64)
        positive_rows = positive_rows[positive_rows >= 0].astype(np.int64)
        top = int(max(ra.max(initial=-1), rb.max(initial=-1),
                      positive_rows.max(initial=-1))) + 1
        self.counts = grown_square(self.counts, top)
        m = len(self.counts)
        self.positives = grown(self.positives, m, 0.0)[:m]
        pairs = np.bincount(np.concatenate([ra * m + rb, rb * m + ra]), minlength=m * m)
        self.counts += pairs.reshape(m, m).astype(np.float32)
        self.positives += np.bincount(positive_rows, minlength=m).astype(np.float32)
        self._changed.append(np.unique(np.concatenate([ra, rb, positive_rows])))

    # ------------------------------------------------------------------ reading
    def recent_positives(self, user: int) -> np.ndarray:
        """The user's latest positives (internal item ids), newest first."""
        if user < 0 or user >= len(self.filled) or self.filled[user] == 0:
            return np.zeros(0, np.int64)
        n = int(min(self.filled[user], self.r))
        slots = (self.filled[user] - 1 - np.arange(n)) % self.r
        return self.recent[user, slots].astype(np.int64)

    def take_changed(self) -> np.ndarray:
        """Rows whose counts changed since the last call (sorted)."""
        changed = np.unique(np.concatenate(self._changed)) if self._changed else \
            np.zeros(0, np.int64)
        self._changed = []
        return changed.astype(np.int64)

    def state(self) -> dict[str, np.ndarray]:
        return {"counts": self.counts, "positives": self.positives, "recent": self.recent,
                "filled": self.filled}

    def load(self, state: dict[str, np.ndarray]) -> None:
        counts, positives = state["counts"].astype(np.float32), state["positives"]
        recent, filled = state["recent"].astype(np.int32), state["filled"].astype(np.int64)
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or \
                positives.shape != (len(counts),):
            raise ValueError(f"co-liked counts {counts.shape}, expected (rows, rows)")
        if recent.ndim != 2 or recent.shape[1] != self.r or len(filled) != len(recent):
            raise ValueError(f"recent positives {recent.shape}, expected (users, {self.r})")
        self.counts, self.positives = counts, positives.astype(np.float32)
        self.recent, self.filled = recent, filled
        self._changed = []

    def nbytes(self) -> int:
        return (self.counts.nbytes + self.positives.nbytes + self.recent.nbytes
                + self.filled.nbytes)


def co_at(counts: np.ndarray, positives: np.ndarray, anchor_rows: np.ndarray,
          rows: np.ndarray) -> np.ndarray:
    """``co`` (see the module docstring) of each of ``rows`` for a user whose latest
    positives sit in ``anchor_rows``; rows outside the counts (-1: no row) have none, and
    anchors outside them are ignored."""
    size = len(counts)
    anchor_rows = np.asarray(anchor_rows, np.int64)
    anchor_rows = anchor_rows[(anchor_rows >= 0) & (anchor_rows < size)]
    rows = np.asarray(rows, np.int64)
    inside = (rows >= 0) & (rows < size)
    out = np.zeros(len(rows))
    if len(anchor_rows) and inside.any():
        at = rows[inside]
        summed = counts[anchor_rows][:, at].sum(axis=0, dtype=np.float64)
        out[inside] = summed / np.sqrt(np.maximum(positives[at].astype(np.float64), 1.0))
    return out
