"""What the trainer asks of a model: learn from a micro-batch, and say what to store."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from schemas.events import Event


@dataclass
class LearnStats:
    events: int = 0
    loss: float | None = None
    skipped: bool = False  # the model refused the batch (non-finite loss or gradients)
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchReport:
    """What one micro-batch of the stream trainer did (for its metrics)."""

    records: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    skipped: int = 0  # events of a batch the model refused as non-finite
    seconds: float = 0.0
    checkpointed: bool = False


class Learner(ABC):
    """A model the stream trainer feeds. Implementations hold their state in memory."""

    #: names of the blobs :meth:`state` returns (known before any state exists)
    blob_names: tuple[str, ...] = ()
    #: the training loss, and what the served scores are: "logloss" (probabilities) or
    #: "mse" (predicted values)
    loss: str = "logloss"

    @abstractmethod
    def learn(self, events: list[Event]) -> LearnStats: ...

    @abstractmethod
    def state(self) -> dict[str, bytes]:
        """Named blobs persisted atomically with the trainer's progress after each batch."""

    @abstractmethod
    def restore(self, blobs: dict[str, bytes]) -> None:
        """Load what :meth:`state` produced (blobs may be missing on a first start)."""
