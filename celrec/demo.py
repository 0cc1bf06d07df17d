"""A synthetic event stream with planted cluster structure, so learning is visible.

Users and items belong to ``groups`` planted groups (index modulo ``groups``). Half the
impressions show an item of the user's own group, half a random item. The click
probability is ``p_match`` or ``p_other`` (match or not), shifted in logit space by an
own bias per user and per item (``bias_std``, 0: none), so that a model needs both the
groups (clusters) and the biases to reach the ceiling. ``popularity_skew`` > 0 draws items
Zipf-like (item k of a group with weight 1 / (1 + k) ** skew) instead of uniformly.

The best possible AUC (the true click probabilities as scores) is
:meth:`DemoWorkload.ceiling_auc`.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from schemas.events import Event, EventType


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class DemoWorkload:
    # Small enough that every user and item is seen often within a minute at the demo's
    # 200 events/s, so the groups are found and learning shows on the dashboard.
    users: int = 400
    items: int = 200
    groups: int = 8
    p_match: float = 0.6  # click probability when user and item groups match
    p_other: float = 0.05
    bias_std: float = 0.0  # own logit bias per user and per item, N(0, bias_std)
    popularity_skew: float = 0.0
    seed: int = 0

    def group_of(self, index: int) -> int:
        return index % self.groups

    def _biases(self, rng: random.Random, n: int) -> list[float]:
        return [rng.gauss(0.0, self.bias_std) if self.bias_std > 0 else 0.0 for _ in range(n)]

    def click_probability(self, user: int, item: int, user_bias: list[float],
                          item_bias: list[float]) -> float:
        match = self.group_of(user) == self.group_of(item)
        z = _logit(self.p_match if match else self.p_other) + user_bias[user] + item_bias[item]
        return 1.0 / (1.0 + math.exp(-z))

    def labelled(self) -> Iterator[tuple[Event, float]]:
        """Events with the click probability each was drawn with (for the ceiling)."""
        rng = random.Random(self.seed)
        user_bias, item_bias = self._biases(rng, self.users), self._biases(rng, self.items)
        per_group = max(1, self.items // self.groups)
        weights = [1.0 / (1.0 + k) ** self.popularity_skew for k in range(per_group)]
        ranks = list(range(per_group))
        while True:
            user = rng.randrange(self.users)
            if rng.random() < 0.5:  # half the impressions come from the user's own group
                group = self.group_of(user)
            else:
                group = rng.randrange(self.groups)
            rank = (rng.choices(ranks, weights)[0] if self.popularity_skew > 0
                    else rng.randrange(per_group))
            item = min(rank * self.groups + group, self.items - 1)
            p = self.click_probability(user, item, user_bias, item_bias)
            clicked = rng.random() < p
            yield Event(user_id=f"user-{user}", item_id=f"item-{item}",
                        event_type=EventType.click, value=1.0 if clicked else 0.0,
                        scenario="demo"), p

    def events(self) -> Iterator[Event]:
        for event, _ in self.labelled():
            yield event

    def ceiling_auc(self, samples: int = 50_000) -> float:
        """AUC of the true click probabilities on ``samples`` events of the stream."""
        pairs = []
        for k, (event, p) in enumerate(self.labelled()):
            if k >= samples:
                break
            pairs.append((p, event.value))
        pairs.sort()
        ranks_pos, n_pos, k = 0.0, 0, 0
        while k < len(pairs):  # average ranks over ties
            j = k
            while j < len(pairs) and pairs[j][0] == pairs[k][0]:
                j += 1
            positives = sum(1 for _, y in pairs[k:j] if y > 0)
            ranks_pos += positives * (k + j + 1) / 2.0
            n_pos += positives
            k = j
        n_neg = len(pairs) - n_pos
        return (ranks_pos - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def stream_demo(send, stop: threading.Event, rate_per_s: float = 200.0,
                batch: int = 20, workload: DemoWorkload | None = None) -> None:
    """Call ``send(list[Event])`` with batches at about ``rate_per_s`` until ``stop``."""
    events = (workload or DemoWorkload()).events()
    interval = batch / rate_per_s
    while not stop.is_set():
        started = time.monotonic()
        try:
            send([next(events) for _ in range(batch)])
        except Exception:  # the demo must never take the service down; retry next tick
            pass
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
