"""What the trainer asks of a model: learn from a micro-batch, and say what to store."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from celrec.settings import Settings
from schemas.events import Event


@dataclass
class LearnStats:
    events: int = 0
    loss: float | None = None
    skipped: bool = False  # the model refused the batch (non-finite loss or gradients)
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


def make_learner(settings: Settings) -> Learner:
    """The learner the settings ask for (online CEL with the MF interaction for now)."""
    from trainer.cel_learner import CELLearner

    return CELLearner(settings)
