"""What the trainer asks of a model: learn from a micro-batch, and say what to store."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from schemas.events import Event
from schemas.state import decode_array, encode_array


@dataclass
class LearnStats:
    events: int = 0
    loss: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


class Learner(ABC):
    """A model the stream trainer feeds. Implementations hold their state in memory."""

    #: names of the blobs :meth:`state` returns (known before any state exists)
    blob_names: tuple[str, ...] = ()

    @abstractmethod
    def learn(self, events: list[Event]) -> LearnStats: ...

    @abstractmethod
    def state(self) -> dict[str, bytes]:
        """Named blobs persisted atomically with the trainer's progress after each batch."""

    @abstractmethod
    def restore(self, blobs: dict[str, bytes]) -> None:
        """Load what :meth:`state` produced (blobs may be missing on a first start)."""


class PopularityLearner(Learner):
    """The minimal model: per-item positive-event counts (also a cold-start prior)."""

    blob_names = ("popularity_ids", "popularity_counts")

    def __init__(self) -> None:
        self.positives: Counter[str] = Counter()
        self.events = 0

    def learn(self, events: list[Event]) -> LearnStats:
        for event in events:
            self.events += 1
            if event.value > 0:
                self.positives[event.item_id] += 1
        return LearnStats(events=len(events))

    def state(self) -> dict[str, bytes]:
        items = sorted(self.positives)
        ids = "\n".join(items).encode("utf-8")
        counts = np.array([self.positives[i] for i in items], dtype=np.int64)
        return {"popularity_ids": ids, "popularity_counts": encode_array(counts)}

    def restore(self, blobs: dict[str, bytes]) -> None:
        ids_blob, counts_blob = blobs.get("popularity_ids"), blobs.get("popularity_counts")
        self.positives.clear()
        if not ids_blob or counts_blob is None:
            return
        counts = decode_array(counts_blob)
        for item, count in zip(ids_blob.decode("utf-8").split("\n"), counts, strict=True):
            self.positives[item] = int(count)


def make_learner(settings: object) -> Learner:
    """The learner the settings ask for (the CEL learner replaces this minimal default)."""
    return PopularityLearner()
