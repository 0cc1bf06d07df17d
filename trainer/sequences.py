"""Per-user recent behaviour sequences kept by the streaming trainer (saml/dupn).

Bounded per user (``CELREC_SEQUENCE_LENGTH``); remembers which users changed since the last
publish so only their sequences are rewritten in the state store.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np

from cel.deep_serving import SequenceRows, empty_rows


class InternalStep(NamedTuple):
    item: int  # internal item id
    behaviour: int
    scenario: int  # index in the learner's scenario list
    time: float


class UserSequences:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self._seqs: dict[int, deque[InternalStep]] = {}
        self.dirty: set[int] = set()

    def __len__(self) -> int:
        return len(self._seqs)

    def steps(self, user: int) -> list[InternalStep]:
        seq = self._seqs.get(user)
        return [] if seq is None else list(seq)

    def append(self, user: int, step: InternalStep) -> None:
        seq = self._seqs.get(user)
        if seq is None:
            seq = self._seqs[user] = deque(maxlen=self.capacity)
        seq.append(step)
        self.dirty.add(user)

    @staticmethod
    def rows(steps: list[InternalStep], scenario_code: np.ndarray | None = None
             ) -> SequenceRows:
        """The steps as arrays; ``scenario_code`` maps scenario indices to network ids."""
        if not steps:
            return empty_rows()
        items, behaviours, scenarios, times = (np.asarray(col) for col in zip(*steps,
                                                                             strict=True))
        scenarios = scenarios.astype(np.int64)
        if scenario_code is not None:
            scenarios = scenario_code[scenarios]
        return SequenceRows(items.astype(np.int64), behaviours.astype(np.int64), scenarios,
                            times.astype(np.float64))

    def export(self) -> dict[str, np.ndarray]:
        users = np.fromiter(self._seqs, np.int64, len(self._seqs))
        lengths = np.fromiter((len(self._seqs[u]) for u in users), np.int64, len(users))
        flat = [s for u in users for s in self._seqs[int(u)]]
        rows = self.rows(flat)
        return {"seq.users": users, "seq.lengths": lengths, "seq.items": rows.items,
                "seq.behaviours": rows.behaviours, "seq.scenarios": rows.scenarios,
                "seq.times": rows.times}

    def load(self, arrays: dict[str, np.ndarray]) -> None:
        self._seqs.clear()
        ends = np.cumsum(arrays["seq.lengths"])
        starts = ends - arrays["seq.lengths"]
        cols = [arrays[f"seq.{c}"].tolist() for c in ("items", "behaviours", "scenarios",
                                                      "times")]
        for user, a, b in zip(arrays["seq.users"].tolist(), starts.tolist(), ends.tolist(),
                              strict=True):
            self._seqs[user] = deque((InternalStep(*step) for step in
                                      zip(*(c[a:b] for c in cols), strict=True)),
                                     maxlen=self.capacity)
        self.dirty = set(self._seqs)  # the store may lack them: republish all once
